//! Units: byte sizes (`64MiB`) and durations (`250ms`) as the manifest and the CLI write them.
//!
//! Sizes are ours, not `bytesize`'s, measured against bytesize 2: it also accepts `1.5GiB`,
//! `1 T` and `1k` (units our docs do not promise), turns `99999999999999GiB` into `u64::MAX`
//! instead of refusing it, accepts `0MiB`, and prints `64.0 MiB` where we print `64 MiB`.

use std::time::Duration;

/// The longest `limits.timeout` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Bytes in binary units, as [`parse_memory`] reads them: `512 B`, `128 MiB`, `1.2 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut whole = bytes;
    while whole >= 1024 && unit < UNITS.len() - 1 {
        whole /= 1024;
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

/// `"64MiB"`, `"1 GB"`, `"512"` (bytes). Units are case-insensitive.
/// Parses a size such as `64MiB` or `512` (bytes), as `limits.memory` takes it; the CLI uses
/// it for its flags so that both spell sizes the same way.
pub fn parse_memory(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() {
        return Err(SizeError::NoNumber { text: text.into() });
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => {
            return Err(SizeError::UnknownUnit {
                unit: other.into(),
                text: text.into(),
            });
        }
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| SizeError::TooLarge { text: text.into() })?;
    if bytes == 0 {
        return Err(SizeError::Zero { text: text.into() });
    }
    Ok(bytes)
}

/// Why a size such as `limits.memory` cannot be read; each message quotes the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{text}` does not start with a number")]
    NoNumber { text: String },
    #[error("unknown unit `{unit}` in `{text}`")]
    UnknownUnit { unit: String, text: String },
    #[error("`{text}` is too large")]
    TooLarge { text: String },
    #[error("`{text}` is zero; a component needs some memory")]
    Zero { text: String },
}

/// Why a duration is not a usable request timeout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeoutError {
    /// Longer than [`MAX_TIMEOUT`]: the runtime adds the timeout to the clock for each
    /// request's deadline, and past a bound that addition would overflow.
    #[error("longer than a day; a deadline that far away is no deadline")]
    TooLong,
    #[error("a timeout of zero would fail every request")]
    Zero,
    #[error("{0}")]
    NotADuration(#[from] humantime::DurationError),
}

/// A request timeout such as `250ms`, `5s` or `2m`: more than zero, at most [`MAX_TIMEOUT`].
/// Surrounding white space is ignored.
pub fn parse_timeout(text: &str) -> Result<Duration, TimeoutError> {
    match humantime::parse_duration(text.trim())? {
        d if d > MAX_TIMEOUT => Err(TimeoutError::TooLong),
        d if d.is_zero() => Err(TimeoutError::Zero),
        d => Ok(d),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("64 mib"), Ok(64 << 20));
        assert_eq!(parse_memory("1KB"), Ok(1000));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("64XB").is_err());
        assert!(parse_memory("MiB").is_err());
        assert!(parse_memory("0MiB").is_err());
        assert!(parse_memory("99999999999999GiB").is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("24h"), Ok(MAX_TIMEOUT));
        assert_eq!(parse_timeout("25h"), Err(TimeoutError::TooLong));
        assert_eq!(parse_timeout("0s"), Err(TimeoutError::Zero));
        assert!(matches!(
            parse_timeout("soon"),
            Err(TimeoutError::NotADuration(_))
        ));
    }
}
