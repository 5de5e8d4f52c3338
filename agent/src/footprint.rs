//! Keeping the agent's resident memory small on devices where every MiB counts.
//!
//! Most of a small Rust daemon's RSS is not heap but its own executable's pages: start-up
//! code (config parsing, clap, TLS setup) runs once and stays resident, and on each page
//! fault the kernel maps the neighbouring pages of the file too. Once running, the agent
//! drops the read-only pages of its executable from its address space (`MADV_DONTNEED`:
//! they stay in the page cache, and the few the tick loop uses come straight back), so
//! its resident set is what it actually runs. Measured: BENCHMARKS.md, "Agent footprint".

/// Unmaps the clean, file-backed pages of the executable and its shared libraries; they
/// fault back in on use.
/// Best effort: any failure leaves the process as it was.
pub fn trim_code_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        // Code, and the read-only headers at the start of the file. Not any other
        // read-only mapping: the RELRO part of the data was written by the loader (its
        // relocations) before it was made read-only, and dropping it would bring back
        // the unrelocated file contents.
        if !(perms == "r-xp" || perms == "r--p" && offset.trim_start_matches('0').is_empty()) {
            continue;
        }
        let path = f.nth(2);
        // Our executable and the shared libraries (libc, libm, the loader): their code is
        // file-backed and clean everywhere.
        if !path.is_some_and(|p| p == exe.as_ref() || p.starts_with('/') && p.contains(".so")) {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        if end <= start {
            continue;
        }
        // SAFETY: the range is one of this process's own read-only mappings of its
        // executable file, as listed by the kernel; MADV_DONTNEED on such a mapping only
        // drops pages that are re-read from the unchanged file on the next access.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Dropping the wrong pages (relocated data) crashes at once; this runs real work
    /// after trimming, and checks the trim did something.
    #[test]
    fn trimming_code_pages_shrinks_rss_and_the_process_keeps_working() {
        let before = rss_kib();
        trim_code_pages();
        let after = rss_kib();
        let text = format!("{:?}", (1..100).map(|i| i * 3).collect::<Vec<_>>());
        let v: serde_json::Value = serde_json::from_str(&format!("{{\"a\": {text}}}")).unwrap();
        assert_eq!(v["a"][1], 6);
        assert!(after < before, "RSS {before} KiB -> {after} KiB");
    }
}
