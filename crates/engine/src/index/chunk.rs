//! How a chunk of index entries is stored: the log positions of up to 256 consecutive
//! revisions of one stream. Positions grow with revisions, so the first is stored whole (u64
//! LE) and each next one as its distance from the one before, a LEB128 varint: one or two bytes
//! for events written close together, instead of eight. (Distances are taken with wrapping
//! arithmetic, so even a position smaller than the one before round-trips, in ten bytes.)

/// Appends `positions` to `out`, an encoded chunk whose last position is `last` (`None`: the
/// chunk is empty).
pub(super) fn extend(out: &mut Vec<u8>, mut last: Option<u64>, positions: &[u64]) {
    for &p in positions {
        match last {
            None => out.extend_from_slice(&p.to_le_bytes()),
            Some(prev) => {
                let mut d = p.wrapping_sub(prev);
                loop {
                    let byte = (d & 0x7f) as u8;
                    d >>= 7;
                    if d == 0 {
                        out.push(byte);
                        break;
                    }
                    out.push(byte | 0x80);
                }
            }
        }
        last = Some(p);
    }
}

/// The positions of an encoded chunk, or `None` if it is malformed.
pub(super) fn decode(v: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::with_capacity(v.len().min(256 * 8) / 2 + 1);
    if v.is_empty() {
        return Some(out);
    }
    let mut last = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    out.push(last);
    let mut rest = &v[8..];
    while !rest.is_empty() {
        let (mut d, mut shift) = (0u64, 0u32);
        loop {
            let (&byte, tail) = rest.split_first()?;
            rest = tail;
            if shift > 63 {
                return None;
            }
            d |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        last = last.wrapping_add(d);
        out.push(last);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunks_round_trip_however_they_are_built(
            positions in proptest::collection::vec(any::<u64>(), 0..300),
            split in 0usize..300,
        ) {
            let split = split.min(positions.len());
            let mut v = Vec::new();
            extend(&mut v, None, &positions[..split]);
            extend(&mut v, positions[..split].last().copied(), &positions[split..]);
            prop_assert_eq!(decode(&v), Some(positions));
        }
    }

    #[test]
    fn close_positions_take_a_byte_or_two() {
        let positions: Vec<u64> = (0..256).map(|i| 1_000_000 + i * 300).collect();
        let mut v = Vec::new();
        extend(&mut v, None, &positions);
        assert_eq!(v.len(), 8 + 255 * 2);
        assert_eq!(decode(&v[..9]), None, "a cut varint is malformed");
    }
}
