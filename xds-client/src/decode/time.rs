//! `google.protobuf.Duration` values.

use std::time::Duration;

use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::error::{Ctx, DecodeError};

/// A non-negative duration.
pub(crate) fn duration(
    ctx: &Ctx,
    field: &str,
    value: &PbDuration,
) -> Result<Duration, DecodeError> {
    let PbDuration { seconds, nanos } = *value;
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Duration::new(secs, nanos)),
        _ => Err(ctx.invalid(
            field,
            format!("{seconds}s {nanos}ns is not a valid non-negative duration"),
        )),
    }
}

/// An optional duration with Envoy's default when absent.
pub(crate) fn duration_or(
    ctx: &Ctx,
    field: &str,
    value: Option<&PbDuration>,
    default: Duration,
) -> Result<Duration, DecodeError> {
    value.map_or(Ok(default), |v| duration(ctx, field, v))
}

/// A timeout where Envoy reads zero as "no timeout".
pub(crate) fn timeout_or(
    ctx: &Ctx,
    field: &str,
    value: Option<&PbDuration>,
    default: Duration,
) -> Result<Option<Duration>, DecodeError> {
    let timeout = duration_or(ctx, field, value, default)?;
    Ok((!timeout.is_zero()).then_some(timeout))
}
