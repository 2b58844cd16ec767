//! The platform part of a running profiler. On Linux: the SIGPROF handler's state and
//! the aggregator thread that arms the per-thread timers, drains and symbolises. On any
//! other system the crate still builds (the windows, labels and endpoints are portable),
//! and starting a profiler is [`Error::Unsupported`].
//!
//! `--cfg stackwatch_unsupported_platform` builds the non-Linux side on Linux, so CI can
//! check that it compiles without a macOS or Windows toolchain.

#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
mod linux {
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use crate::aggregator::Aggregator;
    use crate::settings::ProfilerBuilder;
    use crate::shared::Shared;
    use crate::signal_handler::{self, InstallError, SignalState};
    use crate::thread_timers::ThreadTimers;
    use crate::Error;

    /// The handler's state and the aggregator thread of a running profiler.
    pub(crate) struct Sampler {
        aggregator: JoinHandle<()>,
        signal: &'static SignalState,
    }

    impl Sampler {
        /// Installs the handler (once per process), activates fresh handler state and
        /// starts the aggregator, which arms the timers.
        pub(crate) fn start(
            settings: &ProfilerBuilder,
            shared: Arc<Shared>,
        ) -> Result<Self, Error> {
            signal_handler::install().map_err(|e| match e {
                InstallError::Foreign => Error::SignalInUse,
                InstallError::Os(source) => Error::Os {
                    what: "installing the SIGPROF handler",
                    source,
                },
            })?;
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            // Leaked for the handler's 'static reference; reclaimed in `stop` once no
            // handler can reach it.
            let signal: &'static SignalState = Box::leak(Box::new(SignalState::new(
                settings.sample_buffer,
                2 * cpus + 4,
            )));
            if !signal_handler::activate(signal) {
                // SAFETY: never activated, so no handler can see it; it came from
                // Box::leak just above.
                drop(unsafe { Box::from_raw(signal as *const SignalState as *mut SignalState) });
                return Err(Error::AlreadyRunning);
            }
            let period_ns = 1_000_000_000 / settings.frequency_hz as u64;
            let timers = ThreadTimers::new(period_ns, settings.timer_mode)
                .with_unnamed_root(&settings.unnamed_thread_root)
                .with_first_cpu_arming(settings.arm_on_first_cpu);
            let aggregator = std::thread::Builder::new()
                // Not the process name, which would make it an unnamed thread in services
                // called `stackwatch`.
                .name("stackwatch-agg".into())
                .spawn(move || {
                    Aggregator::new(shared, signal, timers).run();
                })
                .map_err(|source| Error::Os {
                    what: "spawning the aggregator thread",
                    source,
                });
            match aggregator {
                Ok(aggregator) => Ok(Sampler { aggregator, signal }),
                Err(e) => {
                    release(signal);
                    Err(e)
                }
            }
        }

        /// Waits for the aggregator (asked to stop through `Shared`; it disarms every
        /// timer before it exits), then frees the handler state.
        pub(crate) fn stop(self) {
            let _ = self.aggregator.join();
            release(self.signal);
        }
    }

    /// Frees the handler state once no handler can be running on it.
    fn release(signal: &'static SignalState) {
        if signal_handler::deactivate() {
            // SAFETY: deactivated and quiesced: no handler holds a reference, and the
            // aggregator (the other user) has exited. It came from Box::leak in `start`.
            drop(unsafe { Box::from_raw(signal as *const SignalState as *mut SignalState) });
        } else {
            tracing::warn!("signal handlers did not quiesce; leaking the sampler state");
        }
    }
}

#[cfg(all(target_os = "linux", not(stackwatch_unsupported_platform)))]
pub(crate) use linux::Sampler;

#[cfg(not(all(target_os = "linux", not(stackwatch_unsupported_platform))))]
mod other {
    use std::sync::Arc;

    use crate::settings::ProfilerBuilder;
    use crate::shared::Shared;
    use crate::Error;

    /// Nothing samples here: starting is [`Error::Unsupported`].
    pub(crate) struct Sampler;

    impl Sampler {
        /// Always [`Error::Unsupported`].
        pub(crate) fn start(
            settings: &ProfilerBuilder,
            shared: Arc<Shared>,
        ) -> Result<Self, Error> {
            let _ = (settings, shared);
            Err(Error::Unsupported {
                os: std::env::consts::OS,
            })
        }

        /// Nothing to stop.
        pub(crate) fn stop(self) {}
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn starting_is_a_clear_error_and_the_rest_still_works() {
            let e = crate::Profiler::builder()
                .start()
                .err()
                .expect("no sampler here");
            assert!(matches!(e, crate::Error::Unsupported { .. }), "{e}");
            assert!(e.to_string().contains("Linux only"), "{e}");
            let set = crate::LabelSet::new(&[("table", "orders")]);
            let _g = set.enter();
            assert_eq!(crate::LabelSet::current(), set);
        }
    }
}

#[cfg(not(all(target_os = "linux", not(stackwatch_unsupported_platform))))]
pub(crate) use other::Sampler;
