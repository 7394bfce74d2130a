//! jemalloc's own account of the process's memory, read at each scrape
//! ([`AllocatorCollector`]).
//!
//! `process_resident_memory_bytes` says how much memory the process holds, not why. These
//! figures say which part of it the program is using (`allocated`), which part is pages
//! the allocator keeps for those allocations (`active`: allocated plus the free space of
//! partly used pages, i.e. fragmentation), and what the allocator itself holds
//! (`metadata`, and `resident`, which also counts freed pages not yet given back). An
//! operator who sees RSS grow can tell a leak (allocated grows) from fragmentation (active
//! grows, allocated does not) from pages waiting to be purged (resident minus active).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

/// The allocator's statistics as gauges: `ironroot_allocator_allocated_bytes`,
/// `_active_bytes`, `_resident_bytes`, `_metadata_bytes`, `_retained_bytes`.
///
/// The figures mean something only in a process whose global allocator is jemalloc
/// ([`use_jemalloc!`](crate::use_jemalloc): the server and agent binaries); elsewhere
/// (a library's unit tests) jemalloc holds next to nothing. If the statistics cannot be
/// read the gauges are left off the page, never reported as 0.
#[derive(Debug, Default)]
pub struct AllocatorCollector;

/// One reading of the allocator's statistics, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in live allocations (`stats.allocated`).
    pub allocated: u64,
    /// Bytes in pages that hold live allocations (`stats.active`): at least `allocated`.
    pub active: u64,
    /// Bytes in the allocator's own structures (`stats.metadata`).
    pub metadata: u64,
    /// Bytes of resident pages the allocator maps (`stats.resident`): active pages,
    /// metadata, and freed pages not yet returned to the kernel.
    pub resident: u64,
    /// Bytes of address space given back to the kernel but kept mapped for reuse
    /// (`stats.retained`): not resident.
    pub retained: u64,
}

impl AllocatorStats {
    /// Reads the statistics now (they are cached by jemalloc until its epoch is advanced,
    /// which this does first).
    pub fn read() -> Result<Self, tikv_jemalloc_ctl::Error> {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance()?;
        let as_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        Ok(AllocatorStats {
            allocated: as_u64(stats::allocated::read()?),
            active: as_u64(stats::active::read()?),
            metadata: as_u64(stats::metadata::read()?),
            resident: as_u64(stats::resident::read()?),
            retained: as_u64(stats::retained::read()?),
        })
    }
}

impl Collector for AllocatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = AllocatorStats::read() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "ironroot_allocator_allocated",
                "Bytes in live allocations (jemalloc stats.allocated).",
                s.allocated,
            ),
            (
                "ironroot_allocator_active",
                "Bytes in pages holding live allocations, their free space included \
                 (jemalloc stats.active; active minus allocated is fragmentation).",
                s.active,
            ),
            (
                "ironroot_allocator_metadata",
                "Bytes in the allocator's own structures (jemalloc stats.metadata).",
                s.metadata,
            ),
            (
                "ironroot_allocator_resident",
                "Bytes of resident pages the allocator maps: active pages, metadata, and freed \
                 pages not yet returned to the kernel (jemalloc stats.resident).",
                s.resident,
            ),
            (
                "ironroot_allocator_retained",
                "Bytes of address space returned to the kernel but kept mapped for reuse; not \
                 resident (jemalloc stats.retained).",
                s.retained,
            ),
        ] {
            super::const_gauge(
                &mut encoder,
                name,
                help,
                Some(&Unit::Bytes),
                i64::try_from(value).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    // The test binary runs on jemalloc, as the server and the agent do.
    crate::use_jemalloc!();

    /// A 64 MiB allocation, every page written, shows in `allocated` and `active`, and its
    /// release shows too: the figures follow the program, they are not fixed numbers.
    #[test]
    fn a_large_allocation_shows_in_allocated_and_active_and_its_release_too() {
        const SIZE: u64 = 64 << 20;
        let before = AllocatorStats::read().expect("jemalloc statistics");
        let mut block = vec![0u8; SIZE as usize];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        let during = AllocatorStats::read().expect("jemalloc statistics");
        assert!(
            during.allocated >= before.allocated + SIZE,
            "allocated {} -> {}",
            before.allocated,
            during.allocated
        );
        assert!(during.active >= during.allocated, "{during:?}");
        assert!(during.resident >= SIZE, "{during:?}");
        assert!(std::hint::black_box(&block)[4096] == 1);
        drop(block);
        let after = AllocatorStats::read().expect("jemalloc statistics");
        assert!(
            after.allocated + SIZE <= during.allocated,
            "allocated {} -> {} after the release",
            during.allocated,
            after.allocated
        );
    }

    #[test]
    fn the_scrape_page_carries_the_five_gauges_in_bytes() {
        let mut r = Registry::default();
        r.register_collector(Box::new(AllocatorCollector));
        let page = crate::metrics::encode(&r);
        for name in [
            "ironroot_allocator_allocated_bytes ",
            "ironroot_allocator_active_bytes ",
            "ironroot_allocator_metadata_bytes ",
            "ironroot_allocator_resident_bytes ",
            "ironroot_allocator_retained_bytes ",
        ] {
            let value: f64 = page
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name:?} missing from:\n{page}"))
                .trim()
                .parse()
                .expect("a number");
            if name != "ironroot_allocator_retained_bytes " {
                assert!(value > 0.0, "{name} is {value}");
            }
        }
    }
}
