//! Process-wide CPU settings: thread pools and how the allocator treats large buffers.

/// Call first thing in `main`, before any tensor op or thread exists.
///
/// - Unless the user set `CANDLE_NUM_THREADS`, candle runs element-wise ops on the calling
///   thread: its extra pool for them busy-waits, which on few cores steals the CPU from the
///   convolution and matmul threads (rayon, unaffected) and made attribution ~2.3× slower on
///   2 cores. Results are unchanged (element-wise ops are computed per element either way).
/// - With glibc, freed tensor buffers stay in the heap for reuse (`mallopt`). By default
///   glibc gives every block over 128 KiB back to the kernel and the next tensor faults in
///   fresh zeroed pages: a quarter of ResNet-50 attribution time at batch 8 went to page
///   faults. Keeping them makes attribution ~25% and VGG-16 forward+backward ~18% faster;
///   the cost is that the process keeps its peak memory until it exits.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // No block is mapped on its own (M_MMAP_MAX = 0, so the mmap threshold no longer
    // matters; VGG-16 activations at batch 8 are 100 MB), and the heap is never trimmed.
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// The system allocator, asking the kernel for transparent huge pages (2 MiB) for blocks
/// of at least 4 MiB: activations, gradients and packed operands. Their strided reads
/// (image planes, kernel panels, im2col rows) then miss the TLB far less often. Install it
/// in a binary with `#[global_allocator] static A: zerobias::HugePageAlloc =
/// zerobias::HugePageAlloc;` (the `zerobias` command does). Measured on the 2-core Zen 4
/// development machine, alternating runs: the ResNet-50 training step 2–3% faster (as
/// with glibc's own `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`). Where the kernel's
/// transparent huge pages are off (`never`), or off Linux, it is the system allocator.
pub struct HugePageAlloc;

/// Blocks from this size on are advised.
const HUGE_FROM: usize = 4 << 20;

// SAFETY: every call is forwarded to the system allocator unchanged; the advice only
// changes how the kernel backs the pages of a block the caller now owns.
unsafe impl std::alloc::GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        let p = unsafe { std::alloc::System.alloc(layout) };
        advise_huge(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        advise_huge(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { std::alloc::System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        let q = unsafe { std::alloc::System.realloc(p, layout, size) };
        advise_huge(q, size);
        q
    }
}

/// madvise(MADV_HUGEPAGE) over the whole 2 MiB pages inside a large block.
#[cfg(target_os = "linux")]
fn advise_huge(p: *mut u8, size: usize) {
    const HUGE_PAGE: usize = 2 << 20;
    if p.is_null() || size < HUGE_FROM {
        return;
    }
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize + size) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: the range lies inside a block this process owns; the advice changes no
        // contents. A failure (THP off) leaves the pages as they were, which is fine.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_p: *mut u8, _size: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn huge_page_allocator_keeps_contents_through_realloc() {
        let a = HugePageAlloc;
        for size in [1000, HUGE_FROM - 1, HUGE_FROM + 4097, 3 * HUGE_FROM] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: non-zero size; every access stays inside the block; freed with its layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                for i in (0..size).step_by(4093) {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, layout, 2 * size);
                assert!(!q.is_null());
                for i in (0..size).step_by(4093) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "size {size}, byte {i}");
                }
                a.dealloc(q, Layout::from_size_align(2 * size, 64).unwrap());
                let z = a.alloc_zeroed(layout);
                assert!((0..size).step_by(4093).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
