//! Keeping freed memory in the process on glibc, for NdArray training.
//!
//! NdArray allocates fresh buffers for nearly every tensor of a step (all-MiniLM-L6-v2's
//! activations, gradients and Adam's moments are megabytes each, the token embedding's 47 MB).
//! glibc's malloc serves blocks above its mmap threshold (128 KiB at first, raised as blocks
//! are freed, to 32 MiB at most) with `mmap` and returns them with `munmap`, and gives the
//! heap's free top above its trim threshold back to the kernel, so each step faults those
//! pages in again: measured on the MiniLM fine-tune (40 steps alone on the 2-core VM), 2.66 s
//! per step with 33 s of the run's 116 s in the kernel, against 1.97 s per step and 1 s in the
//! kernel with both thresholds raised. The results are bit for bit the same; only where freed
//! memory goes changes.

/// Raises glibc's mmap and trim thresholds so freed blocks stay in the heap for the next
/// step. Call once, before the first tensor; a variable the user set
/// (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`) wins. Elsewhere it
/// does nothing.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |var: &str, param: libc::c_int, value: libc::c_int| {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only changes allocator parameters; it is called before the
                // allocations it affects and takes plain integers.
                unsafe { libc::mallopt(param, value) };
            }
        };
        // Blocks up to 1 GiB from the heap (glibc 2.36 accepts it; a refused value leaves
        // the default, so the return value is not needed).
        set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 1 << 30);
        set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, i32::MAX);
        set("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 256 << 20);
    }
}
