//! A queue message as bytes, the same in every backend: a version byte, then the data, the
//! content type (a presence byte, then it) and the metadata (a count, then each key and value),
//! every variable part preceded by its length as a 4-byte little-endian number. Decoding
//! refuses anything else (`None`), trailing bytes included.

use crate::queue::Message;

const VERSION: u8 = 1;

pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let metadata_bytes: usize = message
        .metadata
        .iter()
        .map(|(key, value)| 8 + key.len() + value.len())
        .sum();
    let mut out = Vec::with_capacity(14 + message.data.len() + metadata_bytes);
    out.push(VERSION);
    put(&mut out, &message.data);
    match &message.content_type {
        Some(content_type) => {
            out.push(1);
            put(&mut out, content_type.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(message.metadata.len() as u32).to_le_bytes());
    for (key, value) in &message.metadata {
        put(&mut out, key.as_bytes());
        put(&mut out, value.as_bytes());
    }
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Option<Message> {
    let mut reader = Reader { bytes };
    if reader.byte()? != VERSION {
        return None;
    }
    let data = reader.part()?.to_vec();
    let content_type = match reader.byte()? {
        0 => None,
        1 => Some(reader.text()?),
        _ => return None,
    };
    let count = reader.number()?;
    let mut metadata = Vec::new();
    for _ in 0..count {
        metadata.push((reader.text()?, reader.text()?));
    }
    reader.bytes.is_empty().then_some(Message {
        data,
        content_type,
        metadata,
    })
}

fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn number(&mut self) -> Option<usize> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    }

    fn part(&mut self) -> Option<&'a [u8]> {
        let length = self.number()?;
        self.take(length)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.part()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_as_they_went_and_garbage_does_not_decode() {
        let message = Message {
            data: b"\0binary\xff".to_vec(),
            content_type: Some("application/json".into()),
            metadata: vec![("b".into(), "2".into()), ("a".into(), "é".into())],
        };
        let encoded = encode(&message);
        assert_eq!(decode(&encoded), Some(message));
        assert_eq!(
            decode(&encode(&Message::default())),
            Some(Message::default())
        );
        for cut in 0..encoded.len() {
            assert_eq!(decode(&encoded[..cut]), None, "cut at {cut}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        // A count far past what the bytes hold allocates nothing and fails.
        let mut huge = encode(&Message::default());
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
    }
}
