//! Reading a TLS ClientHello's server name, without terminating TLS: how a
//! tunnel is classified as `tls` and how domain fronting is caught (a
//! CONNECT to one host whose TLS names another).

/// What the first bytes of a tunnel are.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake: a `tcp` tunnel.
    NotTls,
    /// The start of a TLS handshake, not complete yet: read more.
    Partial,
    /// A ClientHello, with its SNI if it has one.
    Tls(Option<String>),
    /// A TLS handshake that is not a well-formed ClientHello: veto cannot
    /// vouch for what it is, so it is refused, never passed as `tcp`.
    Malformed(&'static str),
}

/// The most bytes a ClientHello may take, records included. A hello may
/// be spread over several records (RFC 8446 5.1); post-quantum key shares
/// make real ones a few KiB, so 64 KiB is ample, and bounds the wait.
pub const MAX_HELLO: usize = 64 * 1024;

/// Most bytes of one record's fragment (RFC 8446 5.1: 2^14).
const MAX_FRAGMENT: usize = 16 * 1024;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Classifies the first bytes a client sent into a tunnel. The handshake
/// is reassembled from as many records as it spans, so a hello split in
/// two (or sent a few bytes at a time) is read whole: its name is checked
/// and its tunnel can be opened like any other.
pub fn parse(buf: &[u8]) -> Hello {
    match buf {
        [] => return Hello::Partial,
        [first, ..] if *first != 22 => return Hello::NotTls,
        [_, major, ..] if *major != 3 => return Hello::NotTls,
        _ => {}
    }
    // The handshake bytes, gathered record by record; borrowed when the
    // hello fits in the first record (the usual case).
    let mut joined: Vec<u8> = Vec::new();
    let mut first: &[u8] = &[];
    let mut at = 0;
    let mut records = 0;
    let body = loop {
        let Some(head) = buf.get(at..at + 5) else {
            return Hello::Partial;
        };
        if head[0] != 22 {
            return Hello::Malformed(
                "a TLS record other than a handshake came before the ClientHello ended",
            );
        }
        if head[1] != 3 {
            return Hello::Malformed("a TLS record with another protocol version");
        }
        let len = usize::from(head[3]) << 8 | usize::from(head[4]);
        if len == 0 || len > MAX_FRAGMENT {
            return Hello::Malformed("a TLS record of an impossible length");
        }
        let Some(fragment) = buf.get(at + 5..at + 5 + len) else {
            return if at + 5 + len > MAX_HELLO {
                Hello::Malformed("a ClientHello larger than veto reads")
            } else {
                Hello::Partial
            };
        };
        at += 5 + len;
        records += 1;
        if records == 1 {
            first = fragment;
        } else {
            if records == 2 {
                joined.extend_from_slice(first);
            }
            joined.extend_from_slice(fragment);
        }
        let hs: &[u8] = if records == 1 { first } else { &joined };
        if hs.first().is_some_and(|t| *t != 1) {
            return Hello::Malformed("a TLS handshake that does not begin with a ClientHello");
        }
        if hs.len() >= 4 {
            let need =
                4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if need > MAX_HELLO {
                return Hello::Malformed("a ClientHello larger than veto reads");
            }
            if hs.len() >= need {
                break &hs[4..need];
            }
        }
    };
    let mut r = Reader { b: body };
    let sni = (|| {
        r.take(2)?; // legacy version
        r.take(32)?; // random
        r.vec8()?; // session id
        r.vec16()?; // cipher suites
        r.vec8()?; // compression methods
        if r.b.is_empty() {
            // No extensions at all (old clients): no name to check.
            return Some(None);
        }
        let mut ext = Reader { b: r.vec16()? };
        let mut name = None;
        while !ext.b.is_empty() {
            let ty = ext.u16()?;
            let body = ext.vec16()?;
            if ty == 0 {
                if name.is_some() {
                    // Two server_name extensions: which one would the
                    // server read? Neither is trusted.
                    return None;
                }
                let mut list = Reader {
                    b: Reader { b: body }.vec16()?,
                };
                while !list.b.is_empty() {
                    let name_type = list.u8()?;
                    let host = list.vec16()?;
                    if name_type == 0 {
                        if name.is_some() {
                            return None;
                        }
                        name = Some(String::from_utf8_lossy(host).into_owned());
                    }
                }
            }
        }
        Some(name)
    })();
    match sni {
        Some(name) => Hello::Tls(name),
        None => Hello::Malformed("the ClientHello does not parse"),
    }
}

/// A minimal ClientHello naming `sni` (if any), its handshake in records
/// of `record` bytes (0: one record), with an unknown extension of `extra`
/// bytes: for tests and fuzz seeds, never sent by veto.
pub fn sample_hello(sni: Option<&str>, record: usize, extra: &[u8]) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        let mut list = vec![0u8];
        list.extend((n.len() as u16).to_be_bytes());
        list.extend(n);
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend(list);
        ext.extend(0u16.to_be_bytes());
        ext.extend((body.len() as u16).to_be_bytes());
        ext.extend(body);
    }
    if !extra.is_empty() {
        ext.extend(0xffu16.to_be_bytes());
        ext.extend((extra.len() as u16).to_be_bytes());
        ext.extend(extra);
    }
    let mut ch = vec![3, 3];
    ch.extend([7u8; 32]);
    ch.push(0);
    ch.extend(2u16.to_be_bytes());
    ch.extend([0x13, 0x01]);
    ch.extend([1, 0]);
    ch.extend((ext.len() as u16).to_be_bytes());
    ch.extend(ext);
    let mut hs = vec![1];
    hs.extend(&(ch.len() as u32).to_be_bytes()[1..]);
    hs.extend(ch);
    let size = if record == 0 { hs.len() } else { record };
    let mut out = Vec::new();
    for piece in hs.chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((piece.len() as u16).to_be_bytes());
        out.extend(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: Option<&str>) -> Vec<u8> {
        sample_hello(sni, 0, &[])
    }

    #[test]
    fn classifies() {
        assert_eq!(
            parse(&hello(Some("api.example.com"))),
            Hello::Tls(Some("api.example.com".into()))
        );
        assert_eq!(parse(&hello(None)), Hello::Tls(None));
        let h = hello(Some("a.b"));
        assert_eq!(parse(&h[..h.len() - 3]), Hello::Partial);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotTls);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert!(matches!(
            parse(&[22, 3, 1, 0, 2, 2, 0]),
            Hello::Malformed(_)
        ));
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Hello::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        for size in [1, 2, 3, 7, 40] {
            let s = sample_hello(Some("fronted.example"), size, &[]);
            assert_eq!(
                parse(&s),
                Hello::Tls(Some("fronted.example".into())),
                "{size}"
            );
            for cut in 0..s.len() {
                assert_eq!(parse(&s[..cut]), Hello::Partial, "size {size} cut {cut}");
            }
        }
    }

    #[test]
    fn a_handshake_that_is_not_a_hello_is_malformed() {
        let mut h = hello(Some("a.b"));
        h[5] = 2; // ServerHello
        assert!(matches!(parse(&h), Hello::Malformed(_)));
        let mut h = hello(Some("a.b"));
        h.truncate(h.len() - 1);
        let n = h.len() - 5;
        h[3..5].copy_from_slice(&(n as u16).to_be_bytes());
        // The record is whole but the handshake inside says it is longer.
        assert_eq!(parse(&h), Hello::Partial);
        let mut alert = hello(Some("a.b"));
        alert.extend([21, 3, 3, 0, 2, 2, 40]);
        let s = sample_hello(Some("a.b"), 10, &[]);
        let mut mixed = s[..15].to_vec();
        mixed.extend([21, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(parse(&mixed), Hello::Malformed(_)));
    }
}
