//! `multipart/form-data` bodies (the Go and Node SDKs): the boundary, and the parts
//! within [`MAX_MULTIPART_PARTS`].

use crate::push::error::PushError;

/// Parts of a multipart body, at most.
pub const MAX_MULTIPART_PARTS: usize = 16;

/// The boundary of a `multipart/form-data` content type.
pub(super) fn multipart_boundary(content_type: &str) -> Result<&str, PushError> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .unwrap_or("");
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(PushError::Invalid(
            "multipart/form-data without a usable boundary".into(),
        ));
    }
    Ok(boundary)
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The named parts of a `multipart/form-data` body (RFC 7578), borrowed from it. At most
/// [`MAX_MULTIPART_PARTS`]; anything malformed is an error.
pub(super) fn multipart_parts<'a>(
    body: &'a [u8],
    boundary: &str,
) -> Result<Vec<(String, &'a [u8])>, PushError> {
    let bad = |why: &str| PushError::Invalid(format!("bad multipart body: {why}"));
    let delimiter = format!("--{boundary}");
    let first = find(body, delimiter.as_bytes()).ok_or_else(|| bad("no boundary"))?;
    let next_delimiter = format!("\r\n--{boundary}");
    let mut rest = &body[first + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        let pad = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        rest = rest[pad..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("no CRLF after a boundary"))?;
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part without headers' end"))?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| bad("headers not UTF-8"))?;
        let data_start = head_end + 4;
        let end = find(&rest[data_start..], next_delimiter.as_bytes())
            .ok_or_else(|| bad("a part without a closing boundary"))?;
        let data = &rest[data_start..data_start + end];
        let mut name = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in v.split(';').skip(1) {
                if let Some((pk, pv)) = param.split_once('=') {
                    if pk.trim().eq_ignore_ascii_case("name") {
                        name = Some(pv.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        let name = name.ok_or_else(|| bad("a part without a Content-Disposition name"))?;
        if parts.len() == MAX_MULTIPART_PARTS {
            return Err(bad(&format!("more than {MAX_MULTIPART_PARTS} parts")));
        }
        parts.push((name, data));
        rest = &rest[data_start + end + next_delimiter.len()..];
    }
}
