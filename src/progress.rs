//! Pull progress for people: bars on a terminal, one plain line per event otherwise
//! (CI logs, pipes), both on stderr so stdout stays machine-readable.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use dockless_registry::{Digest, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Chooses the renderer for the current stderr.
pub fn for_stderr(quiet: bool) -> std::sync::Arc<dyn Progress> {
    if quiet {
        std::sync::Arc::new(dockless_registry::NoProgress)
    } else if std::io::stderr().is_terminal() {
        std::sync::Arc::new(Bars::default())
    } else {
        std::sync::Arc::new(Lines)
    }
}

/// One indicatif bar per blob.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        let mut bars = self.bars.lock().expect("progress lock");
        bars.entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                    )
                    .expect("static template"),
                );
                bar.set_prefix(digest.short().to_string());
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn resolved(&self, image: &str, digest: &Digest) {
        let _ = self.multi.println(format!("{image}: resolved to {digest}"));
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        let bar = self.bar(digest, size);
        bar.set_position(offset);
        bar.set_message(if offset > 0 {
            "resuming"
        } else {
            "downloading"
        });
    }
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(digest) {
            bar.inc(bytes);
        }
    }
    fn blob_retrying(&self, digest: &Digest, attempt: u32, reason: &str) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(digest) {
            bar.set_message(format!("retry {attempt}: {reason}"));
        }
    }
    fn blob_finished(&self, digest: &Digest, cached: bool) {
        let bar = self.bar(digest, 0);
        bar.finish_with_message(if cached { "already present" } else { "done" });
    }
}

/// Plain lines, one per state change (never one per chunk).
struct Lines;

impl Progress for Lines {
    fn resolved(&self, image: &str, digest: &Digest) {
        eprintln!("{image}: resolved to {digest}");
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        if offset > 0 {
            eprintln!("{}: resuming at {offset} of {size} bytes", digest.short());
        } else {
            eprintln!("{}: downloading {size} bytes", digest.short());
        }
    }
    fn blob_retrying(&self, digest: &Digest, attempt: u32, reason: &str) {
        eprintln!(
            "{}: attempt {attempt} interrupted ({reason}), resuming",
            digest.short()
        );
    }
    fn blob_finished(&self, digest: &Digest, cached: bool) {
        eprintln!(
            "{}: {}",
            digest.short(),
            if cached { "already present" } else { "done" }
        );
    }
}
