//! UEFI device paths (UEFI 2.10 §10.3) as text, in the notation of the UEFI "Device Path to
//! Text" protocol for the node types firmware logs carry (PCI, ACPI, hard-drive partitions,
//! file paths, firmware volumes, ...); other nodes as `Path(type,subtype,hex)`. For display
//! only: a malformed path gives `None` and the caller shows the bytes as hex.

use ironroot_tpm::verify::eventlog::uefi::Guid;

/// Nodes shown at most; a longer path is cut with `/...`.
const MAX_NODES: usize = 64;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn guid_at(b: &[u8], at: usize) -> Option<Guid> {
    Some(Guid(b.get(at..at + 16)?.try_into().ok()?))
}

/// UTF-16LE text up to its NUL (or the end).
pub(crate) fn utf16_until_nul(b: &[u8]) -> String {
    let units = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// A whole device path as text; `None` when a node's length is impossible.
pub(super) fn to_text(mut path: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut nodes = 0;
    while !path.is_empty() {
        let (kind, sub) = (*path.first()?, *path.get(1)?);
        let len = usize::from(u16_at(path, 2)?);
        if len < 4 || len > path.len() {
            return None;
        }
        let body = path.get(4..len)?;
        path = path.get(len..)?;
        match (kind, sub) {
            (0x7F, 0xFF) => return Some(out),
            (0x7F, 0x01) => {
                out.push(',');
                continue;
            }
            _ => {}
        }
        nodes += 1;
        if nodes > MAX_NODES {
            out.push_str("/...");
            return Some(out);
        }
        if !out.is_empty() && !out.ends_with(',') {
            out.push('/');
        }
        out.push_str(&node(kind, sub, body));
    }
    // No end node: accepted (some firmware leaves it out), shown as is.
    Some(out)
}

/// One node; a node too short for its type is shown generically.
fn node(kind: u8, sub: u8, b: &[u8]) -> String {
    known_node(kind, sub, b).unwrap_or_else(|| format!("Path({kind},{sub},{})", hex::encode(b)))
}

fn known_node(kind: u8, sub: u8, b: &[u8]) -> Option<String> {
    Some(match (kind, sub) {
        // Hardware.
        (1, 1) => format!("Pci({:#x},{:#x})", b.get(1)?, b.first()?),
        (1, 3) => format!(
            "MemoryMapped({:#x},{:#x},{:#x})",
            u32_at(b, 0)?,
            u64_at(b, 4)?,
            u64_at(b, 12)?
        ),
        (1, 4) => format!("VenHw({})", guid_at(b, 0)?),
        (1, 5) => format!("Ctrl({:#x})", u32_at(b, 0)?),
        // ACPI: compressed EISA ids; PNP0A03 / PNP0A08 are the PCI / PCIe root bridges.
        (2, 1) => acpi(u32_at(b, 0)?, u32_at(b, 4)?),
        // Messaging.
        (3, 2) => format!("Scsi({:#x},{:#x})", u16_at(b, 0)?, u16_at(b, 2)?),
        (3, 5) => format!("USB({:#x},{:#x})", b.first()?, b.get(1)?),
        (3, 10) => format!("VenMsg({})", guid_at(b, 0)?),
        (3, 11) => format!("MAC({},{:#x})", hex::encode(b.get(..6)?), b.get(32)?),
        (3, 18) => format!(
            "Sata({:#x},{:#x},{:#x})",
            u16_at(b, 0)?,
            u16_at(b, 2)?,
            u16_at(b, 4)?
        ),
        (3, 23) => format!("NVMe({:#x},{})", u32_at(b, 0)?, hex::encode(b.get(4..12)?)),
        (3, 24) => format!("Uri({})", String::from_utf8_lossy(b)),
        // Media.
        (4, 1) => hard_drive(b)?,
        (4, 2) => format!(
            "CDROM({:#x},{:#x},{:#x})",
            u32_at(b, 0)?,
            u64_at(b, 4)?,
            u64_at(b, 12)?
        ),
        (4, 3) => format!("VenMedia({})", guid_at(b, 0)?),
        (4, 4) => utf16_until_nul(b),
        (4, 6) => format!("FvFile({})", guid_at(b, 0)?),
        (4, 7) => format!("Fv({})", guid_at(b, 0)?),
        (4, 8) => format!("Offset({:#x},{:#x})", u64_at(b, 4)?, u64_at(b, 12)?),
        // BIOS Boot Specification.
        (5, 1) => format!(
            "BBS({:#x},{})",
            u16_at(b, 0)?,
            String::from_utf8_lossy(b.get(4..)?).trim_end_matches('\0')
        ),
        _ => return None,
    })
}

fn acpi(hid: u32, uid: u32) -> String {
    if hid & 0xFFFF != 0x41D0 {
        return format!("Acpi({hid:#x},{uid:#x})");
    }
    match hid >> 16 {
        0x0A03 => format!("PciRoot({uid:#x})"),
        0x0A08 => format!("PcieRoot({uid:#x})"),
        product => format!("Acpi(PNP{product:04X},{uid:#x})"),
    }
}

/// HARDDRIVE_DEVICE_PATH: partition number, start, size, signature, MBR type, signature type.
fn hard_drive(b: &[u8]) -> Option<String> {
    let (number, start, size) = (u32_at(b, 0)?, u64_at(b, 4)?, u64_at(b, 12)?);
    let signature = match b.get(37)? {
        1 => format!("MBR,{:#010x}", u32_at(b, 20)?),
        2 => format!("GPT,{}", guid_at(b, 20)?),
        other => format!("{other},{}", hex::encode(b.get(20..36)?)),
    };
    Some(format!("HD({number},{signature},{start:#x},{size:#x})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_bytes(kind: u8, sub: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, sub];
        v.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn pci_partition_and_file() {
        let mut p = node_bytes(2, 1, &[0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0]);
        p.extend(node_bytes(1, 1, &[1, 2]));
        let mut hd = vec![0u8; 38];
        hd[0] = 1;
        hd[4] = 0x00;
        hd[5] = 0x08;
        hd[36] = 2;
        hd[37] = 2;
        p.extend(node_bytes(4, 1, &hd));
        let file: Vec<u8> = "\\EFI\\BOOT\\BOOTX64.EFI\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        p.extend(node_bytes(4, 4, &file));
        p.extend(node_bytes(0x7F, 0xFF, &[]));
        assert_eq!(
            to_text(&p).as_deref(),
            Some(
                "PciRoot(0x0)/Pci(0x2,0x1)/HD(1,GPT,00000000-0000-0000-0000-000000000000,0x800,0x0)/\\EFI\\BOOT\\BOOTX64.EFI"
            )
        );
    }

    #[test]
    fn malformed_and_unknown_nodes() {
        // A node claiming more bytes than there are.
        assert_eq!(to_text(&[4, 4, 0x40, 0, 1, 2]), None);
        // A length below the header size.
        assert_eq!(to_text(&[4, 4, 2, 0]), None);
        assert_eq!(
            to_text(&node_bytes(9, 9, &[0xAB])).as_deref(),
            Some("Path(9,9,ab)")
        );
        // A PCI node too short for its fields is shown generically, not read past its end.
        assert_eq!(
            to_text(&node_bytes(1, 1, &[7])).as_deref(),
            Some("Path(1,1,07)")
        );
    }
}
