//! `eventlog show`'s text form: the same report as the JSON, for a person.

use std::fmt::Write;

use super::decode::EventData;
use super::report::{DigestCheck, EventLogReport, EventReport};

/// Bytes of undecoded data shown in text (JSON always has all of it).
const HEX_SHOWN: usize = 64;

/// The report as text.
pub(super) fn render(r: &EventLogReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "format {}, banks {}, startup locality {}, {} events{}",
        r.format,
        r.banks.join(" "),
        r.startup_locality,
        r.events.len(),
        match r.trailing_padding {
            0 => String::new(),
            n => format!(", {n} fill bytes after the last event"),
        }
    );
    for ev in &r.events {
        o.push('\n');
        event(&mut o, ev);
    }
    o.push('\n');
    if r.digest_findings.is_empty() {
        o.push_str("digest findings: none (every checkable digest is the hash of its data)\n");
    } else {
        let _ = writeln!(
            o,
            "digest findings: {} (the data of these events cannot be relied on)",
            r.digest_findings.len()
        );
        for f in &r.digest_findings {
            let _ = writeln!(o, "  {}", f.message);
        }
    }
    for (bank, list) in &r.profile_findings.0 {
        if list.is_empty() {
            let _ = writeln!(o, "profile findings ({bank}): none");
            continue;
        }
        let _ = writeln!(
            o,
            "profile findings ({bank}): {} (a policy reading these PCRs refuses this log)",
            list.len()
        );
        for f in list {
            let _ = writeln!(o, "  {}", f.message);
        }
    }
    for (bank, pcrs) in &r.replay.0 {
        let _ = writeln!(o, "\nreplayed PCRs ({bank}):");
        if pcrs.0.is_empty() {
            o.push_str("  (no event extends a PCR)\n");
        }
        for (pcr, value) in &pcrs.0 {
            let _ = writeln!(o, "  PCR{pcr:<3} {value}");
        }
    }
    o
}

fn event(o: &mut String, ev: &EventReport) {
    let _ = writeln!(
        o,
        "#{:<4} PCR{:<3} {} ({} bytes at offset {})",
        ev.index, ev.pcr, ev.event_type, ev.data_size, ev.offset
    );
    for (bank, hex) in &ev.digests.0 {
        let _ = writeln!(o, "      {bank:<8} {hex}");
    }
    match &ev.data {
        Some(d) => data(o, d),
        None if ev.data_size == 0 => {}
        None => {
            let shown = &ev.data_hex[..ev.data_hex.len().min(HEX_SHOWN * 2)];
            let more = ev.data_size.saturating_sub(HEX_SHOWN);
            let _ = write!(o, "      data: {shown}");
            if more > 0 {
                let _ = write!(o, " ... ({more} more bytes; --output json has them all)");
            }
            o.push('\n');
        }
    }
    let check = match ev.digest_check {
        DigestCheck::MatchesData => "digest: the hash of the event data",
        DigestCheck::Mismatch => "DIGEST MISMATCH: not the hash of this data (see findings)",
        DigestCheck::NotOfData => {
            "digest: of content the log does not carry, or derived from the data"
        }
        DigestCheck::NotExtended => "not extended (EV_NO_ACTION)",
    };
    let _ = writeln!(o, "      {check}");
}

fn data(o: &mut String, d: &EventData) {
    let line = match d {
        EventData::SpecId {
            platform_class,
            spec_version,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info_hex,
        } => {
            let algs: Vec<String> = algorithms
                .iter()
                .map(|a| format!("{} ({} bytes)", a.alg, a.digest_size))
                .collect();
            format!(
                "Spec ID Event03: platform class {platform_class}, spec {spec_version} errata {spec_errata}, uintn size {uintn_size}, banks {}{}",
                algs.join(", "),
                if vendor_info_hex.is_empty() {
                    String::new()
                } else {
                    format!(", vendor info {vendor_info_hex}")
                }
            )
        }
        EventData::StartupLocality { locality } => format!("StartupLocality: {locality}"),
        EventData::NoAction { signature } => format!("signature {signature:?}"),
        EventData::Separator { value_hex, meaning } => format!("separator {value_hex} ({meaning})"),
        EventData::Text { encoding, text } => format!("text ({encoding}): {text:?}"),
        EventData::UefiVariable {
            guid,
            name,
            data_length,
            secure_boot,
            signature_entries,
            boot_order,
            description,
            device_path,
        } => {
            let mut s = format!("UEFI variable {guid} {name:?}, {data_length} bytes");
            if let Some(v) = secure_boot {
                let _ = write!(s, ", SecureBoot={v}");
            }
            if let Some(n) = signature_entries {
                let _ = write!(s, ", {n} signature entries");
            }
            if let Some(b) = boot_order {
                let _ = write!(s, ", order {}", b.join(" "));
            }
            if let Some(desc) = description {
                let _ = write!(s, ", {desc:?}");
            }
            if let Some(p) = device_path {
                let _ = write!(s, ", {p}");
            }
            s
        }
        EventData::TaggedEvent {
            tag_id,
            tag_name,
            data_size,
            text,
        } => {
            let mut s = format!("tagged event {tag_id}");
            if let Some(n) = tag_name {
                let _ = write!(s, " ({n})");
            }
            let _ = write!(s, ", {data_size} bytes");
            if let Some(t) = text {
                let _ = write!(s, ": {t:?}");
            }
            s
        }
        EventData::ImageLoad {
            location,
            length,
            link_time_address,
            device_path,
            device_path_hex,
        } => {
            let path = device_path
                .clone()
                .or_else(|| device_path_hex.as_ref().map(|h| format!("device path {h}")))
                .unwrap_or_default();
            format!("image at {location}, {length} bytes (linked at {link_time_address}): {path}")
        }
        EventData::FirmwareBlob {
            base,
            length,
            description,
        } => match description {
            Some(d) => format!("firmware blob {d:?} at {base}, {length} bytes"),
            None => format!("firmware blob at {base}, {length} bytes"),
        },
    };
    let _ = writeln!(o, "      {line}");
}
