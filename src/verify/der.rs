//! The little DER this crate reads by hand: elements with single-byte tags and definite
//! lengths (all X.509, CMS and SCT structures use), and their re-encoding.

/// One DER element: tag, content, and the bytes after it (lengths up to 4 bytes). What is not
/// DER — high tag numbers, indefinite or non-minimal lengths — is refused.
pub fn split(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        if len < 0x80 {
            return None;
        }
        (len, &rest[n..])
    };
    let content = rest.get(..len)?;
    Some((tag, content, &rest[len..]))
}

/// The elements of a constructed value's content, each with its tag, content and whole encoding.
pub fn elements(mut content: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tag, inner, rest) = split(content)?;
        out.push(Element {
            tag,
            content: inner,
            whole: &content[..content.len() - rest.len()],
        });
        content = rest;
    }
    Some(out)
}

#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub whole: &'a [u8],
}

pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The text of a UTF8String (or of one wrapped in an explicit tag, as in otherName).
pub fn utf8_string(der: &[u8]) -> Option<String> {
    let (tag, content, _) = split(der)?;
    match tag {
        0x0c => String::from_utf8(content.to_vec()).ok(),
        0xa0 => utf8_string(content),
        _ => None,
    }
}

/// The dotted form of an OBJECT IDENTIFIER's content bytes.
pub fn oid(content: &[u8]) -> Option<String> {
    let (&first, rest) = content.split_first()?;
    // First arcs beyond one byte do not occur in the OIDs read here.
    if first & 0x80 != 0 {
        return None;
    }
    let mut parts = vec![
        (first / 40).min(2) as u64,
        (first as u64) - 40 * (first / 40).min(2) as u64,
    ];
    let mut value = 0u64;
    for b in rest {
        if value > u64::MAX >> 7 {
            return None;
        }
        value = (value << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            parts.push(value);
            value = 0;
        }
    }
    // A last subidentifier left unterminated is no OID.
    if rest.last().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Some(
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = encode(0x30, &content);
            let (tag, back, rest) = split(&encoded).unwrap();
            assert_eq!((tag, back.len(), rest.len()), (0x30, len, 0));
        }
        assert!(split(&[0x30, 0x05, 1]).is_none(), "content past the end");
        assert!(
            split(&[0x30, 0x81, 0x01, 1]).is_none(),
            "non-minimal length"
        );
        assert!(
            split(&[0x30, 0x80, 0x00, 0x00]).is_none(),
            "indefinite length"
        );
        assert!(split(&[0x1f, 0x01, 0x00]).is_none(), "high tag number");
    }

    #[test]
    fn utf8_strings_plain_and_explicitly_tagged() {
        assert_eq!(
            utf8_string(&[0x0c, 0x03, b'a', b'b', b'c']).as_deref(),
            Some("abc")
        );
        assert_eq!(
            utf8_string(&[0xa0, 0x05, 0x0c, 0x03, b'a', b'b', b'c']).as_deref(),
            Some("abc")
        );
        assert_eq!(utf8_string(&[0x04, 0x01, b'a']), None);
    }

    #[test]
    fn object_identifiers_read_as_dotted_text() {
        // 1.2.840.113549.1.7.2 (CMS signedData)
        let der = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
        assert_eq!(oid(&der).as_deref(), Some("1.2.840.113549.1.7.2"));
        // 1.3.6.1.4.1.11129.2.4.2 (SCT list)
        let der = [0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];
        assert_eq!(oid(&der).as_deref(), Some("1.3.6.1.4.1.11129.2.4.2"));
    }
}
