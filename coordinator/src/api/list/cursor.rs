//! The listing's cursor: where the previous page ended, as opaque text
//! (lowercase hex of a tag byte and the key, big-endian). A cursor is
//! checked when it comes back: anything this API did not make is refused.

use uuid::Uuid;

/// Where the previous page ended, in the listing's own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// Roots or a tree: the last id listed (newest first).
    Before(Uuid),
    /// Children: the last `(parent_seq, child_index)` listed.
    After(i32, i64),
}

const TAG_BEFORE: u8 = 1;
const TAG_AFTER: u8 = 2;

impl Cursor {
    /// Lowercase hex of a tag byte and the key, big-endian.
    pub(crate) fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(17);
        match self {
            Cursor::Before(id) => {
                bytes.push(TAG_BEFORE);
                bytes.extend_from_slice(id.as_bytes());
            }
            Cursor::After(seq, index) => {
                bytes.push(TAG_AFTER);
                bytes.extend_from_slice(&seq.to_be_bytes());
                bytes.extend_from_slice(&index.to_be_bytes());
            }
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor `text` holds, or why it is not one.
    pub(crate) fn decode(text: &str) -> Result<Self, &'static str> {
        if !text.len().is_multiple_of(2) || text.len() > 64 {
            return Err("not a cursor this API made");
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or("not a cursor this API made")?;
        match bytes.split_first() {
            Some((&TAG_BEFORE, key)) => Uuid::from_slice(key)
                .map(Cursor::Before)
                .map_err(|_| "not a cursor this API made"),
            Some((&TAG_AFTER, key)) if key.len() == 12 => {
                let (seq, index) = key.split_at(4);
                let seq = i32::from_be_bytes(seq.try_into().map_err(|_| "truncated cursor")?);
                let index = i64::from_be_bytes(index.try_into().map_err(|_| "truncated cursor")?);
                Ok(Cursor::After(seq, index))
            }
            _ => Err("not a cursor this API made"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for c in [
            Cursor::Before(Uuid::now_v7()),
            Cursor::Before(Uuid::nil()),
            Cursor::After(1, 0),
            Cursor::After(i32::MAX, i64::MAX),
            Cursor::After(3, -1),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c), "{c:?}");
        }
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let good = Cursor::After(2, 7).encode();
        for text in [
            "",
            "x",
            "0",
            "zz",
            "01",
            "03ff",
            &good[..good.len() - 2],
            &format!("{good}00"),
            &"0".repeat(66),
            "é1",
        ] {
            assert!(Cursor::decode(text).is_err(), "{text:?} decoded");
        }
    }
}
