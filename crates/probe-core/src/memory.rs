//! This process's own memory: handing what its allocator freed back to the system.
#![allow(unsafe_code)]

/// Returns the memory the allocator holds free to the system (glibc keeps freed memory for
/// reuse, so a process's resident size stays where its largest burst took it). Cheap when
/// there is little to return; a no-op where the allocator returns memory as it frees it
/// (musl) or on other systems.
pub fn hand_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists
    // under its locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How much freed memory each of the allocator's heaps keeps for reuse before it hands the
/// rest back by itself (see [`keep_freed_memory`]).
pub const KEPT_FREE_BYTES: usize = 1 << 20;

/// Lets each heap keep up to [`KEPT_FREE_BYTES`] freed at its top instead of handing it back
/// at every `free` (glibc's default is 128 KiB, adjusted upwards as large blocks come and
/// go). The writer's transactions allocate and free a few hundred KiB each (SQLite's page
/// cache for every `RETURNING`): handed back and faulted in again at every commit, that was
/// eight `madvise` calls and the page faults after them per commit. Bursts are still handed
/// back, by [`hand_back_free_memory`] once they are over. Call once, before threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes the allocator's tunables under its
    // own lock.
    unsafe {
        let bytes = libc::c_int::try_from(KEPT_FREE_BYTES).unwrap_or(libc::c_int::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
    }
}
