//! Caps that keep a hostile or broken registry from filling the disk or hanging a pull.
//!
//! A descriptor's `size` is the registry's claim: a layer of 32 TiB with an endless body is a
//! valid manifest. So every pull checks the claims against these caps before the first blob
//! byte is fetched, keeps a reserve of free space on the store's file system before and while
//! it downloads, and treats a transfer that trickles below a minimum rate as failed. Neither
//! docker, containerd nor podman has such caps; the defaults are set far above what a real
//! image needs, and every error names the environment variable that raises its cap.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The variable the binary maps to [`Limits::max_layers`].
pub const MAX_LAYERS_VAR: &str = "DOCKLESS_MAX_LAYERS";
/// The variable the binary maps to [`Limits::max_layer_bytes`].
pub const MAX_LAYER_BYTES_VAR: &str = "DOCKLESS_MAX_LAYER_BYTES";
/// The variable the binary maps to [`Limits::max_image_bytes`].
pub const MAX_IMAGE_BYTES_VAR: &str = "DOCKLESS_MAX_IMAGE_BYTES";
/// The variable the binary maps to [`Limits::free_space_reserve`].
pub const FREE_SPACE_RESERVE_VAR: &str = "DOCKLESS_FREE_SPACE_RESERVE";
/// The variable the binary maps to [`Stall::min_bytes_per_sec`].
pub const STALL_MIN_RATE_VAR: &str = "DOCKLESS_STALL_MIN_RATE";
/// The variable the binary maps to [`Stall::window`] (milliseconds, so tests can shrink it as
/// `DOCKLESS_RETRY_BASE_MS` shrinks the backoff).
pub const STALL_WINDOW_MS_VAR: &str = "DOCKLESS_STALL_WINDOW_MS";

const GIB: u64 = 1 << 30;

/// Size and count caps of one pull; part of [`crate::Settings`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Layers per image. Docker refuses more than 127 (the old aufs/overlay stacking limit),
    /// so no image pushed by docker has more.
    pub max_layers: usize,
    /// Declared size of one layer blob (compressed). 16 GiB: the layers of large real images
    /// (CUDA, PyTorch) stay within a few GiB.
    pub max_layer_bytes: u64,
    /// Sum of the declared layer sizes of one image. 64 GiB: four of the largest layers.
    pub max_image_bytes: u64,
    /// Free space a pull leaves on the store's file system: it is refused when the missing
    /// blobs would eat into it, and stops when a download reaches it. 1 GiB keeps room for the
    /// unpack, the job's data and the rest of the system after a failed pull.
    pub free_space_reserve: u64,
    /// When a slow transfer counts as failed.
    pub stall: Stall,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layers: 127,
            max_layer_bytes: 16 * GIB,
            max_image_bytes: 64 * GIB,
            free_space_reserve: GIB,
            stall: Stall::default(),
        }
    }
}

/// A transfer that receives fewer than `min_bytes_per_sec * window` bytes within any `window`
/// is a transfer error: retried from the bytes on disk like a cut connection, then failed
/// with [`Error::Stalled`]. A total silence is already caught by the read timeout; this
/// catches a registry that sends a byte now and then.
#[derive(Clone, Debug)]
pub struct Stall {
    /// Minimum average rate over a window; 0 disables the rule.
    pub min_bytes_per_sec: u64,
    /// How long the rate may stay below the minimum.
    pub window: Duration,
}

impl Default for Stall {
    fn default() -> Self {
        Stall {
            min_bytes_per_sec: 1024,
            window: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The defaults, with every `DOCKLESS_*` variable of this module that is set (and not
    /// empty) applied: the one place that reads them, so the names in the errors are the names
    /// read. Sizes are bytes, optionally with a binary suffix (`16G`, `512M`, `64KiB`); the
    /// stall window is milliseconds (tests shrink it, as `DOCKLESS_RETRY_BASE_MS` shrinks the
    /// backoff); a stall rate of 0 turns the rule off. A malformed value is an error naming
    /// the variable, never silently the default.
    pub fn from_env() -> Result<Limits> {
        Limits::from_lookup(|var| std::env::var(var).ok())
    }

    /// [`Limits::from_env`] over any lookup (tests pass a map instead of the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        let mut limits = Limits::default();
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(MAX_LAYERS_VAR) {
            limits.max_layers = positive(MAX_LAYERS_VAR, &v, v.trim().parse().ok())?;
        }
        for (var, field) in [
            (MAX_LAYER_BYTES_VAR, &mut limits.max_layer_bytes),
            (MAX_IMAGE_BYTES_VAR, &mut limits.max_image_bytes),
        ] {
            if let Some(v) = get(var) {
                *field = positive(var, &v, parse_bytes(&v))?;
            }
        }
        if let Some(v) = get(FREE_SPACE_RESERVE_VAR) {
            limits.free_space_reserve =
                parse_bytes(&v).ok_or_else(|| invalid_bytes(FREE_SPACE_RESERVE_VAR, &v))?;
        }
        if let Some(v) = get(STALL_MIN_RATE_VAR) {
            limits.stall.min_bytes_per_sec =
                parse_bytes(&v).ok_or_else(|| invalid_bytes(STALL_MIN_RATE_VAR, &v))?;
        }
        if let Some(v) = get(STALL_WINDOW_MS_VAR) {
            let ms: u64 = positive(STALL_WINDOW_MS_VAR, &v, v.trim().parse().ok())?;
            limits.stall.window = Duration::from_millis(ms);
        }
        Ok(limits)
    }
}

/// A whole number above zero, or an error naming `var`.
fn positive<T: Default + PartialOrd>(
    var: &'static str,
    value: &str,
    parsed: Option<T>,
) -> Result<T> {
    parsed
        .filter(|n| *n > T::default())
        .ok_or_else(|| Error::InvalidLimit {
            var,
            value: value.to_string(),
            expected: "a whole number above zero (sizes in bytes, optionally with K, M, G or T)",
        })
}

fn invalid_bytes(var: &'static str, value: &str) -> Error {
    Error::InvalidLimit {
        var,
        value: value.to_string(),
        expected: "a whole number of bytes, optionally with K, M, G or T",
    }
}

/// `1024`, `64K`, `512MiB`, `16G`, `1T` (binary multiples; case-insensitive).
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

impl Stall {
    /// Bytes a window must bring, or `None` when the rule is off.
    pub(crate) fn floor(&self) -> Option<u64> {
        (self.min_bytes_per_sec > 0 && !self.window.is_zero()).then(|| {
            (self.min_bytes_per_sec as u128 * self.window.as_millis() / 1000)
                .try_into()
                .unwrap_or(u64::MAX)
        })
    }
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub(crate) fn available_bytes(path: &Path) -> Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(|e| Error::Io {
        op: "statvfs",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Renders a byte count for error messages: exact bytes and a human figure.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{n} bytes ({value:.1} {})", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_floor_and_byte_rendering() {
        assert_eq!(Stall::default().floor(), Some(60 * 1024));
        let off = Stall {
            min_bytes_per_sec: 0,
            ..Stall::default()
        };
        assert_eq!(off.floor(), None);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(16 << 30), "17179869184 bytes (16.0 GiB)");
        assert!(available_bytes(Path::new("/")).is_ok());
    }

    #[test]
    fn limits_from_the_environment_are_validated() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            }
        };
        let l = Limits::from_lookup(env(&[
            (MAX_LAYERS_VAR, "200"),
            (MAX_LAYER_BYTES_VAR, "32G"),
            (MAX_IMAGE_BYTES_VAR, "100GiB"),
            (FREE_SPACE_RESERVE_VAR, "0"),
            (STALL_MIN_RATE_VAR, "0"),
            (STALL_WINDOW_MS_VAR, "500"),
            ("DOCKLESS_UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(l.max_layers, 200);
        assert_eq!(l.max_layer_bytes, 32 << 30);
        assert_eq!(l.max_image_bytes, 100 << 30);
        assert_eq!(l.free_space_reserve, 0);
        assert_eq!(l.stall.floor(), None);
        assert_eq!(l.stall.window, Duration::from_millis(500));
        assert_eq!(
            Limits::from_lookup(env(&[(MAX_LAYERS_VAR, "")]))
                .unwrap()
                .max_layers,
            127,
            "empty means unset"
        );
        for bad in [
            (MAX_LAYERS_VAR, "0"),
            (MAX_LAYERS_VAR, "-5"),
            (MAX_LAYER_BYTES_VAR, "abc"),
            (MAX_IMAGE_BYTES_VAR, "1.5G"),
            (FREE_SPACE_RESERVE_VAR, "5%"),
            (STALL_WINDOW_MS_VAR, "0"),
            (MAX_LAYER_BYTES_VAR, "99999999999T"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([bad]));
            let err = Limits::from_lookup(env(pairs)).unwrap_err().to_string();
            assert!(err.starts_with(bad.0), "names the variable: {err}");
        }
    }
}
