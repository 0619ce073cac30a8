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
