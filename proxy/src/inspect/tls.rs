//! Recognising a TLS ClientHello and reading its SNI and ALPN offer, without consuming it.

/// Largest ClientHello we wait for (Envoy's `TLS_MAX_CLIENT_HELLO`).
pub(crate) const MAX_CLIENT_HELLO: usize = 64 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SNI_HOST_NAME: u8 = 0;
/// RFC 8446 5.1: a record's fragment is at most 2^14 bytes (plus expansion for protected
/// records, which a ClientHello never is).
const MAX_RECORD: usize = 1 << 14;

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    NeedMore,
    NotTls,
    ClientHello(ClientHello),
}

/// The parts of a ClientHello that filter-chain matching uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientHello {
    pub server_name: Option<String>,
    /// The protocols offered, in the client's order; empty without an ALPN extension.
    pub alpn: Vec<String>,
}

/// Parses the start of a connection as TLS records carrying a ClientHello. A hello split over
/// several records is reassembled.
pub(crate) fn parse(bytes: &[u8]) -> Parse {
    let mut handshake = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(header) = rest.get(..5) else {
            return if plausible_header_prefix(rest) {
                Parse::NeedMore
            } else {
                Parse::NotTls
            };
        };
        if !plausible_header_prefix(header) {
            return Parse::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Parse::NotTls;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Parse::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        match hello_body(&handshake) {
            Body::NeedMore => continue,
            Body::NotHello => return Parse::NotTls,
            Body::Complete(body) => {
                return match client_hello(body) {
                    Some(hello) => Parse::ClientHello(hello),
                    None => Parse::NotTls,
                };
            }
        }
    }
}

/// Content type handshake, protocol version 3.x (SSL 3.0 .. TLS 1.3 all say 3.x here).
fn plausible_header_prefix(b: &[u8]) -> bool {
    let checks = [
        b.first().is_none_or(|&t| t == CONTENT_HANDSHAKE),
        b.get(1).is_none_or(|&major| major == 3),
        b.get(2).is_none_or(|&minor| minor <= 4),
    ];
    checks.iter().all(|&ok| ok)
}

enum Body<'a> {
    NeedMore,
    NotHello,
    Complete(&'a [u8]),
}

fn hello_body(handshake: &[u8]) -> Body<'_> {
    let Some(&msg_type) = handshake.first() else {
        return Body::NeedMore;
    };
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return Body::NotHello;
    }
    let Some(l) = handshake.get(1..4) else {
        return Body::NeedMore;
    };
    let len = (usize::from(l[0]) << 16) | (usize::from(l[1]) << 8) | usize::from(l[2]);
    if len + 4 > MAX_CLIENT_HELLO {
        return Body::NotHello;
    }
    match handshake.get(4..4 + len) {
        Some(body) => Body::Complete(body),
        None => Body::NeedMore,
    }
}

/// `None` when the body is not a well-formed ClientHello.
fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    r.take(32)?; // random
    let session_id = r.u8_prefixed()?;
    if session_id.len() > 32 {
        return None;
    }
    let ciphers = r.u16_prefixed()?;
    if ciphers.is_empty() || ciphers.len() % 2 != 0 {
        return None;
    }
    if r.u8_prefixed()?.is_empty() {
        return None; // compression methods: at least "null"
    }
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello); // a hello without extensions
    }
    let mut exts = Reader(r.u16_prefixed()?);
    if !r.0.is_empty() {
        return None;
    }
    while !exts.0.is_empty() {
        let ext_type = exts.u16()?;
        let data = exts.u16_prefixed()?;
        match ext_type {
            EXT_SERVER_NAME => hello.server_name = server_name(data),
            // A malformed ALPN list is left for the TLS stack to reject; it offers nothing here.
            EXT_ALPN => hello.alpn = alpn(data).unwrap_or_default(),
            _ => {}
        }
    }
    Some(hello)
}

fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Reader(Reader(data).u16_prefixed()?);
    while !list.0.is_empty() {
        let name_type = list.u8()?;
        let name = list.u16_prefixed()?;
        if name_type == SNI_HOST_NAME {
            return std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
        }
    }
    None
}

fn alpn(data: &[u8]) -> Option<Vec<String>> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.u16_prefixed()?);
    if !outer.0.is_empty() || list.0.len() < 2 {
        return None;
    }
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        let p = list.u8_prefixed()?;
        if p.is_empty() {
            return None;
        }
        protocols.push(String::from_utf8_lossy(p).into_owned());
    }
    Some(protocols)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u8_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn u16_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello as a TLS 1.3 client sends it, with optional SNI and ALPN, split into
    /// records of at most `record_size` bytes.
    pub(crate) fn client_hello_records(
        sni: Option<&str>,
        alpn: &[&str],
        record_size: usize,
    ) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![SNI_HOST_NAME];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            push_ext(&mut exts, EXT_SERVER_NAME, &list);
        }
        if !alpn.is_empty() {
            let mut names = Vec::new();
            for p in alpn {
                names.push(p.len() as u8);
                names.extend_from_slice(p.as_bytes());
            }
            let mut list = (names.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&names);
            push_ext(&mut exts, EXT_ALPN, &list);
        }
        // supported_versions: TLS 1.3, so the hello looks like a real modern one.
        push_ext(&mut exts, 43, &[2, 3, 4]);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(32);
        body.extend_from_slice(&[9u8; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in handshake.chunks(record_size) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn push_ext(exts: &mut Vec<u8>, t: u16, data: &[u8]) {
        exts.extend_from_slice(&t.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    }

    #[test]
    fn reads_sni_and_alpn_in_client_order() {
        let bytes = client_hello_records(Some("www.example.com"), &["h2", "http/1.1"], 16384);
        assert_eq!(
            parse(&bytes),
            Parse::ClientHello(ClientHello {
                server_name: Some("www.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
    }

    #[test]
    fn hello_without_sni_or_alpn_is_still_tls() {
        let bytes = client_hello_records(None, &[], 16384);
        assert_eq!(parse(&bytes), Parse::ClientHello(ClientHello::default()));
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        let bytes = client_hello_records(Some("a.example"), &["istio"], 16384);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Parse::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn hello_split_over_records_is_reassembled() {
        let bytes = client_hello_records(Some("split.example"), &["istio-peer-exchange"], 17);
        assert!(bytes.len() > 5 * 17, "really several records");
        let Parse::ClientHello(hello) = parse(&bytes) else {
            panic!("not recognised: {:?}", parse(&bytes));
        };
        assert_eq!(hello.server_name.as_deref(), Some("split.example"));
        assert_eq!(hello.alpn, ["istio-peer-exchange"]);
    }

    #[test]
    fn plaintext_is_not_tls_from_the_first_byte() {
        assert_eq!(parse(b"G"), Parse::NotTls);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Parse::NotTls);
    }

    #[test]
    fn other_handshake_or_garbage_is_not_tls() {
        // a ServerHello (type 2) record
        assert_eq!(parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), Parse::NotTls);
        // record version 2.x
        assert_eq!(parse(&[22, 2]), Parse::NotTls);
        // empty record
        assert_eq!(parse(&[22, 3, 1, 0, 0]), Parse::NotTls);
        // a complete hello whose body is truncated inside (cipher list longer than the body)
        let mut bytes = client_hello_records(None, &[], 16384);
        bytes[5 + 4 + 2 + 32 + 1 + 32] = 0xff;
        assert_eq!(parse(&bytes), Parse::NotTls);
    }

    #[test]
    fn malformed_alpn_offers_nothing_but_keeps_sni() {
        let mut bytes = client_hello_records(Some("x.example"), &["h2"], 16384);
        // The ALPN entry's own length byte (just before "h2") claims zero bytes.
        let at = bytes.windows(2).rposition(|w| w == b"h2").unwrap() - 1;
        bytes[at] = 0;
        let Parse::ClientHello(hello) = parse(&bytes) else {
            panic!("not recognised");
        };
        assert_eq!(hello.server_name.as_deref(), Some("x.example"));
        assert!(hello.alpn.is_empty());
    }
}
