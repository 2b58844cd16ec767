//! Labels from `tracing` spans (feature `tracing`): a [`tracing_subscriber::Layer`] that
//! turns chosen span fields into sample labels while the span is entered.
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! let _sub = tracing_subscriber::registry()
//!     .with(stackwatch::LabelLayer::new(["table", "tenant"]))
//!     .set_default();
//! let span = tracing::info_span!("apply", table = "orders");
//! let _e = span.enter(); // samples here carry table=orders
//! ```
//!
//! A span's set is its parent's plus its own chosen fields, interned when the span is
//! created (or a field recorded later), so entering and exiting cost one atomic store
//! each. `Instrument`ed futures enter their span on every poll, so the labels follow a
//! task across worker threads.

use std::cell::RefCell;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::labels::{swap_current, LabelSet};

/// Turns the span fields it is given into sample labels while a span is entered.
#[derive(Debug, Clone)]
pub struct LabelLayer {
    fields: Vec<String>,
}

impl LabelLayer {
    /// A layer that labels samples with the span fields named in `fields` (field name =
    /// label key; the value as `tracing` formats it, strings without quotes).
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LabelLayer {
            fields: fields.into_iter().map(Into::into).collect(),
        }
    }
}

/// The label set a span carries, in its extensions.
struct SpanLabels(LabelSet);

struct FieldPicker<'a> {
    wanted: &'a [String],
    pairs: Vec<(String, String)>,
}

impl FieldPicker<'_> {
    fn take(&mut self, field: &Field, value: impl FnOnce() -> String) {
        if self.wanted.iter().any(|w| w == field.name()) {
            self.pairs.push((field.name().to_owned(), value()));
        }
    }
}

impl Visit for FieldPicker<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.take(field, || value.to_owned());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.take(field, || value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.take(field, || value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.take(field, || value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.take(field, || format!("{value:?}"));
    }
}

thread_local! {
    /// The sets to restore on exit, one per labeled span entered on this thread.
    static ENTERED: RefCell<Vec<Option<u32>>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for LabelLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanLabels>().map(|l| l.0))
            .unwrap_or(LabelSet::EMPTY);
        let mut picker = FieldPicker {
            wanted: &self.fields,
            pairs: Vec::new(),
        };
        attrs.record(&mut picker);
        let set = parent.with(&picker.pairs);
        if set != LabelSet::EMPTY {
            span.extensions_mut().insert(SpanLabels(set));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut picker = FieldPicker {
            wanted: &self.fields,
            pairs: Vec::new(),
        };
        values.record(&mut picker);
        if picker.pairs.is_empty() {
            return;
        }
        let mut ext = span.extensions_mut();
        let base = ext.get_mut::<SpanLabels>().map_or(LabelSet::EMPTY, |l| l.0);
        let set = base.with(&picker.pairs);
        match ext.get_mut::<SpanLabels>() {
            Some(l) => l.0 = set,
            None => ext.insert(SpanLabels(set)),
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let Some(set) = span.extensions().get::<SpanLabels>().map(|l| l.0) else {
            return;
        };
        let prev = swap_current(set.id());
        let _ = ENTERED.try_with(|e| e.borrow_mut().push(prev));
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<SpanLabels>().is_none() {
            return;
        }
        let prev = ENTERED
            .try_with(|e| e.borrow_mut().pop())
            .ok()
            .flatten()
            .flatten();
        if let Some(prev) = prev {
            swap_current(prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn entered_spans_set_and_restore_labels() {
        let _sub = tracing_subscriber::registry()
            .with(LabelLayer::new(["table", "op"]))
            .set_default();
        let outer = tracing::info_span!("batch", table = "orders", ignored = 3);
        {
            let _o = outer.enter();
            let l = LabelSet::current().labels();
            assert_eq!(l.len(), 1);
            assert_eq!(l["table"], "orders");
            let inner = tracing::info_span!("row", op = "insert");
            {
                let _i = inner.enter();
                let l = LabelSet::current().labels();
                assert_eq!(
                    (l["table"].as_str(), l["op"].as_str()),
                    ("orders", "insert")
                );
            }
            assert_eq!(LabelSet::current().labels().len(), 1);
            let late = tracing::info_span!("late", op = tracing::field::Empty);
            late.record("op", "delete");
            let _l = late.enter();
            assert_eq!(LabelSet::current().labels()["op"], "delete");
        }
        assert_eq!(LabelSet::current(), LabelSet::EMPTY);
    }
}
