//! `PCIDEV` header lines from `/proc/bus/pci/devices`, so demmio recognises the card.

use mmio_trace_format::{Event, PciDev};

/// Parses `/proc/bus/pci/devices` content into `PCIDEV` events. The kernel's mmiotrace
/// writes the same fields (the log writer prints them in its canonical form).
pub fn pcidev_events(table: &str) -> Vec<Event> {
    table
        .lines()
        .filter_map(parse_proc_line)
        .map(|p| Event::PciDev(Box::new(p)))
        .collect()
}

fn parse_proc_line(line: &str) -> Option<PciDev> {
    let mut f = line.split(['\t', ' ']).filter(|s| !s.is_empty());
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let bdf = hex(f.next()?)?;
    let vendev = hex(f.next()?)?;
    let irq = hex(f.next()?)? as u32;
    let mut starts = [0u64; 7];
    let mut sizes = [0u64; 7];
    for s in starts.iter_mut().chain(sizes.iter_mut()) {
        *s = hex(f.next()?)?;
    }
    Some(PciDev {
        bus: (bdf >> 8) as u8,
        devfn: bdf as u8,
        vendor: (vendev >> 16) as u16,
        device: vendev as u16,
        irq,
        starts,
        sizes,
        driver: f.next().map(|d| d.as_bytes().to_vec()),
    })
}

/// The `PCIDEV` events of this machine (none when there is no PCI bus, e.g. in a microVM).
pub fn machine_pcidevs() -> Vec<Event> {
    std::fs::read_to_string("/proc/bus/pci/devices")
        .map(|t| pcidev_events(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_line_becomes_a_pcidev_event() {
        let t = "0010\t80861237\t0\t00000000fe000008\t0\t0\t0\t0\t0\t0\t01000000\t0\t0\t0\t0\t0\t0\te1000\n";
        let ev = pcidev_events(t);
        assert_eq!(ev.len(), 1);
        let Event::PciDev(p) = &ev[0] else { panic!() };
        assert_eq!(
            (p.bus, p.devfn, p.vendor, p.device),
            (0, 0x10, 0x8086, 0x1237)
        );
        assert_eq!(p.starts[0], 0xfe00_0008);
        assert_eq!(p.sizes[0], 0x0100_0000);
        assert_eq!(p.driver.as_deref(), Some(&b"e1000"[..]));
    }
}
