//! Recognising a plaintext HTTP/1.x request line or the HTTP/2 connection preface.

/// Largest request line we wait for (Envoy's http_inspector limit).
pub(crate) const MAX_INSPECT: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parse {
    NeedMore,
    NotHttp,
    /// The ALPN-style name filter chains match on: `http/1.0`, `http/1.1` or `h2c`.
    Protocol(&'static str),
}

pub(crate) fn parse(bytes: &[u8]) -> Parse {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if bytes.len() >= H2_PREFACE.len() {
            Parse::Protocol("h2c")
        } else {
            Parse::NeedMore
        };
    }
    request_line(bytes)
}

/// `method SP request-target SP HTTP/d.d (CR)LF`, judged on as much as has arrived.
fn request_line(bytes: &[u8]) -> Parse {
    let method_len = bytes.iter().take_while(|&&b| is_tchar(b)).count();
    let Some(&after_method) = bytes.get(method_len) else {
        return Parse::NeedMore;
    };
    if method_len == 0 || after_method != b' ' {
        return Parse::NotHttp;
    }
    let target = &bytes[method_len + 1..];
    let target_len = target
        .iter()
        .take_while(|&&b| b > b' ' && b != 0x7f)
        .count();
    let Some(&after_target) = target.get(target_len) else {
        return Parse::NeedMore;
    };
    if target_len == 0 || after_target != b' ' {
        return Parse::NotHttp;
    }
    version(&target[target_len + 1..])
}

fn version(v: &[u8]) -> Parse {
    const SHAPE: &[u8] = b"HTTP/d.d";
    for (i, &expected) in SHAPE.iter().enumerate() {
        let Some(&b) = v.get(i) else {
            return Parse::NeedMore;
        };
        let ok = if expected == b'd' {
            b.is_ascii_digit()
        } else {
            b == expected
        };
        if !ok {
            return Parse::NotHttp;
        }
    }
    let end = &v[SHAPE.len()..];
    match end {
        [] | [b'\r'] => return Parse::NeedMore,
        [b'\n', ..] | [b'\r', b'\n', ..] => {}
        _ => return Parse::NotHttp,
    }
    // Like Envoy: anything that is not HTTP/1.1 is treated as HTTP/1.0.
    if &v[..SHAPE.len()] == b"HTTP/1.1" {
        Parse::Protocol("http/1.1")
    } else {
        Parse::Protocol("http/1.0")
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Parse::Protocol("http/1.1")
        );
        assert_eq!(
            parse(b"POST /x?y=1 HTTP/1.0\r\n"),
            Parse::Protocol("http/1.0")
        );
        assert_eq!(parse(b"GET / HTTP/1.1\n"), Parse::Protocol("http/1.1"));
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\r\n"),
            Parse::Protocol("http/1.1")
        );
    }

    #[test]
    fn h2_preface() {
        assert_eq!(parse(H2_PREFACE), Parse::Protocol("h2c"));
        assert_eq!(parse(&H2_PREFACE[..10]), Parse::NeedMore);
    }

    #[test]
    fn every_prefix_of_a_request_line_needs_more() {
        let line = b"OPTIONS /a/b HTTP/1.1\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), Parse::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn not_http() {
        assert_eq!(parse(b"\r\n"), Parse::NotHttp);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.2\r\n"), Parse::NotHttp);
        assert_eq!(parse(b"GET  / HTTP/1.1\r\n"), Parse::NotHttp);
        assert_eq!(parse(b"GET / FTP/1.1\r\n"), Parse::NotHttp);
        assert_eq!(parse(b"GET / HTTP/1.1 \r\n"), Parse::NotHttp);
        assert_eq!(parse(&[22, 3, 1, 0, 200]), Parse::NotHttp);
    }
}
