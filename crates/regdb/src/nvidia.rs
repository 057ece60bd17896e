//! NVIDIA chipset detection from `PMC.ID` (BAR0 offset 0), following envytools'
//! `parse_pmc_id` so that a log decodes with the same variants demmio picks.

/// What `PMC.ID` says about the chipset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chipset {
    /// NV10 and later: the chipset id (`0x50` for G80, `0xc0` for GF100, ...),
    /// the `value` of the rnndb `chipset` enum.
    Id(u64),
    /// Before NV10 the ids are not in the enum; the variant name.
    Name(&'static str),
}

/// Decodes a `PMC.ID` value; `None` when it is not a valid id (e.g. all ones from
/// a dead BAR).
pub fn chipset_from_pmc_id(mut id: u32) -> Option<Chipset> {
    // A big-endian card shows the id byte-swapped: bit 31 set and bit 7 clear
    // (bit 7 is always set from NV10 on), or both set with bits 8..11 non-zero.
    if id & 0x8000_0000 != 0 && (id & 0x80 == 0 || id & 0xf00 != 0) {
        id = id.swap_bytes();
    }
    if id & 0x8000_0000 != 0 && id & 0xf00 != 0 {
        return None;
    }
    if id & 0x80 != 0 {
        return Some(Chipset::Id(u64::from(id >> 20 & 0x1ff)));
    }
    if id & 0xf000 != 0 {
        return Some(Chipset::Name(if id & 0xf0_0000 != 0 {
            "NV5"
        } else {
            "NV4"
        }));
    }
    match id >> 16 & 0xf {
        1 => Some(Chipset::Name("NV1")),
        3 if id & 0xff >= 0x20 => Some(Chipset::Name("NV3T")),
        3 => Some(Chipset::Name("NV3")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g80_and_gf100_ids_decode_to_their_chipset() {
        assert_eq!(chipset_from_pmc_id(0x050000a2), Some(Chipset::Id(0x50)));
        assert_eq!(chipset_from_pmc_id(0x0c0000a1), Some(Chipset::Id(0xc0)));
        // The same G80 id as a big-endian card shows it.
        assert_eq!(chipset_from_pmc_id(0xa2000005), Some(Chipset::Id(0x50)));
    }

    #[test]
    fn pre_nv10_ids_decode_to_names() {
        assert_eq!(chipset_from_pmc_id(0x00030010), Some(Chipset::Name("NV3")));
        assert_eq!(chipset_from_pmc_id(0x00034001), Some(Chipset::Name("NV4")));
        assert_eq!(chipset_from_pmc_id(0xffffffff), None);
    }
}
