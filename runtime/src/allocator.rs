//! The allocator both binaries run on, declared once ([`use_jemalloc!`]).
//!
//! jemalloc instead of glibc's malloc:
//! - after a burst of connections glibc kept 60-80 MB of freed heap for good
//!   (fragmented arenas that `malloc_trim` only partly returns); jemalloc gives
//!   freed pages back to the kernel from a background thread within about a second;
//! - the server's store work (sled's node copies, JSON) is allocation-bound: glibc's
//!   malloc was a third of batch entry creation's CPU (docs/benchmarks.md has the figures).

#[doc(hidden)]
pub use tikv_jemallocator as __jemallocator;

/// Makes jemalloc the binary's global allocator, with its options: one background
/// thread purges dirty pages after 1 s (`dirty_decay_ms`), and pages are
/// returned at once rather than kept "muzzy" (`muzzy_decay_ms`).
/// `_RJEM_MALLOC_CONF` in the environment still overrides them. Use once, in a
/// binary's main.rs.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::__jemallocator::Jemalloc =
            $crate::allocator::__jemallocator::Jemalloc;

        // export_name is what makes jemalloc find the options (a symbol it looks up
        // by name); the lint counts it as unsafe because two such symbols would clash.
        #[allow(non_upper_case_globals, unsafe_code)]
        #[export_name = "_rjem_malloc_conf"]
        static malloc_conf: &[u8] =
            b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
    };
}
