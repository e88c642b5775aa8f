//! A growable buffer of plain `Copy` values for the flow table's index and entries, allocated
//! so that the kernel can back it with transparent huge pages: large buffers are aligned to
//! 2 MiB and advised before anything touches them. Owns only memory; knows nothing of flows.
use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size the buffers are aligned to (x86_64 and aarch64 with 4 KiB pages).
const HUGE: usize = 2 << 20;

/// A `Vec`-like buffer of `T` with huge-page-friendly allocations.
///
/// Why not `Vec`: a `Vec` grows by copying into memory that is touched (and so faulted in
/// 4 KiB pages) before it can be advised, and its buffers are not 2 MiB aligned, so only
/// part of each one could ever be a huge page. Here a buffer of at least 2 MiB is 2 MiB
/// aligned and advised (`MADV_HUGEPAGE`, Linux) before the first write: the table's random
/// accesses then miss the TLB far less, and faulting in the memory costs one fault per
/// 2 MiB instead of one per 4 KiB. Elsewhere the buffer is the same, without the advice.
pub(crate) struct HugeVec<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
}

// SAFETY: a HugeVec owns its `T`s exactly as a Vec<T> does (no sharing, no interior
// mutability), so it can move to or be shared with another thread when `T` can.
unsafe impl<T: Copy + Send> Send for HugeVec<T> {}
// SAFETY: as above; `&HugeVec<T>` only hands out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeVec<T> {}

impl<T: Copy> HugeVec<T> {
    /// The layout of a buffer of `cap` values (`cap` > 0, `T` not zero-sized).
    fn layout(cap: usize) -> Layout {
        let size = cap
            .checked_mul(size_of::<T>())
            .unwrap_or_else(|| capacity_overflow());
        let align = if size >= HUGE {
            HUGE.max(align_of::<T>())
        } else {
            align_of::<T>()
        };
        Layout::from_size_align(size, align).unwrap_or_else(|_| capacity_overflow())
    }

    /// An empty buffer with room for `cap` values (at least one).
    pub(crate) fn with_capacity(cap: usize) -> Self {
        const { assert!(size_of::<T>() > 0) };
        let cap = cap.max(1);
        let layout = Self::layout(cap);
        // SAFETY: the layout's size is non-zero (cap >= 1, T is not zero-sized).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
            alloc::handle_alloc_error(layout)
        };
        advise_huge(raw, layout.size());
        Self { ptr, len: 0, cap }
    }

    /// Moves the values into a new buffer with room for `cap` (>= len) values.
    fn grow_to(&mut self, cap: usize) {
        let mut next = Self::with_capacity(cap);
        // SAFETY: both buffers are valid for their capacities, `self.len <= next.cap`, and
        // they do not overlap (two live allocations); the first `len` values are initialised.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), next.ptr.as_ptr(), self.len);
        }
        next.len = self.len;
        *self = next;
    }

    /// Appends `v`, doubling the buffer when it is full.
    #[inline]
    pub(crate) fn push(&mut self, v: T) {
        if self.len == self.cap {
            self.grow_to(self.cap.saturating_mul(2));
        }
        // SAFETY: len < cap after the growth above; the slot is inside the allocation.
        unsafe { self.ptr.as_ptr().add(self.len).write(v) };
        self.len += 1;
    }

    /// Number of values the buffer has room for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Forgets every value (they are `Copy`: nothing to drop); keeps the allocation.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

impl HugeVec<u64> {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut v = Self::with_capacity(len);
        // SAFETY: the buffer holds `cap >= len` u64s, for which all-zero bytes are valid.
        // Written after the advice, so the pages are faulted in as huge pages where possible.
        unsafe { v.ptr.as_ptr().write_bytes(0, len) };
        v.len = len;
        v
    }
}

impl<T: Copy> Deref for HugeVec<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` values are initialised and the pointer is valid and aligned.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeVec<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeVec<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with exactly this layout; `T` is `Copy`, so
        // there is nothing to drop in place.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), Self::layout(self.cap)) };
    }
}

impl<T: Copy> fmt::Debug for HugeVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HugeVec")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

#[cold]
fn capacity_overflow() -> ! {
    panic!("flow table buffer size overflows the address space")
}

/// Asks the kernel to back `[p, p + len)` with transparent huge pages where it can (its
/// aligned 2 MiB stretches). A hint only; elsewhere than Linux, nothing.
fn advise_huge(p: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = p as usize;
        let (Some(from), Some(end)) =
            (start.checked_next_multiple_of(HUGE), start.checked_add(len))
        else {
            return;
        };
        let to = end / HUGE * HUGE;
        if to > from {
            // SAFETY: madvise(MADV_HUGEPAGE) changes neither the contents nor the validity of
            // memory; [from, to) lies inside an allocation the caller owns, and the pointer is
            // not used to access anything.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_grow_keep_values_and_clear_keeps_room() {
        let mut v: HugeVec<[u64; 16]> = HugeVec::with_capacity(3);
        for i in 0..100_000u64 {
            v.push([i; 16]);
        }
        assert_eq!(v.len(), 100_000);
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, x)| x[0] == i as u64 && x[15] == i as u64)
        );
        // 100,000 x 128 bytes is past 2 MiB: that buffer is 2 MiB aligned.
        assert_eq!(v.as_ptr() as usize % HUGE, 0);
        let cap = v.capacity();
        v.clear();
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap);
        v.push([7; 16]);
        assert_eq!(v[0][3], 7);
    }

    #[test]
    fn zeroed_is_all_zero_and_writable() {
        for n in [1, 1000, 1 << 19] {
            let mut v = HugeVec::zeroed(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|x| *x == 0));
            v[n - 1] = 5;
            assert_eq!(v[n - 1], 5);
        }
    }
}
