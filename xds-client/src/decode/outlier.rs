//! A cluster's `outlier_detection` → [`model::OutlierDetection`].

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
use envoy_types::pb::google::protobuf::UInt32Value;

use super::error::{Ctx, DecodeError};
use super::time::duration_or;
use crate::model;

pub(crate) fn outlier_detection(
    ctx: &Ctx,
    pb: Option<&OutlierDetection>,
) -> Result<Option<model::OutlierDetection>, DecodeError> {
    let Some(OutlierDetection {
        consecutive_5xx,
        interval,
        base_ejection_time,
        max_ejection_percent,
        enforcing_consecutive_5xx,
        enforcing_success_rate,
        // Only read by success-rate detection, which must be disabled (below).
        success_rate_minimum_hosts: _,
        success_rate_request_volume: _,
        success_rate_stdev_factor: _,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        split_external_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure,
        enforcing_local_origin_success_rate,
        // Only read by failure-percentage detection, which must be disabled (below).
        failure_percentage_threshold: _,
        enforcing_failure_percentage,
        enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts: _,
        failure_percentage_request_volume: _,
        max_ejection_time,
        max_ejection_time_jitter,
        successful_active_health_check_uneject_host: _, // no active health checks exist
        monitors,
        always_eject_one_host,
        detect_degraded_hosts,
    }) = pb
    else {
        return Ok(None);
    };
    let value = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    // Envoy enables success-rate detection (100%) unless told otherwise; local-origin success
    // rate only counts in split mode. Failure-percentage detection defaults to off.
    let success_rate = value(enforcing_success_rate, 100) != 0;
    let local_success_rate =
        *split_external_local_origin_errors && value(enforcing_local_origin_success_rate, 100) != 0;
    ctx.unsupported_fields()
        .check(
            "enforcing_success_rate (success-rate ejection)",
            success_rate,
        )
        .check(
            "enforcing_local_origin_success_rate (success-rate ejection)",
            local_success_rate,
        )
        .check(
            "enforcing_failure_percentage",
            value(enforcing_failure_percentage, 0) != 0,
        )
        .check(
            "enforcing_failure_percentage_local_origin",
            value(enforcing_failure_percentage_local_origin, 0) != 0,
        )
        .check(
            "max_ejection_time_jitter",
            max_ejection_time_jitter.is_some(),
        )
        .check("monitors", !monitors.is_empty())
        .check(
            "detect_degraded_hosts",
            detect_degraded_hosts.is_some_and(|b| b.value),
        )
        .finish()?;
    let d = model::OutlierDetection::default();
    let percent = |field: &str, v: u32| {
        if v > 100 {
            Err(ctx.invalid(field, format!("{v} is not a percentage (0-100)")))
        } else {
            Ok(v)
        }
    };
    let interval = duration_or(ctx, "interval", interval.as_ref(), d.interval)?;
    if interval.is_zero() {
        return Err(ctx.invalid("interval", "must be greater than zero"));
    }
    let base_ejection_time = duration_or(
        ctx,
        "base_ejection_time",
        base_ejection_time.as_ref(),
        d.base_ejection_time,
    )?;
    if base_ejection_time.is_zero() {
        return Err(ctx.invalid("base_ejection_time", "must be greater than zero"));
    }
    Ok(Some(model::OutlierDetection {
        consecutive_5xx: value(consecutive_5xx, d.consecutive_5xx),
        enforcing_consecutive_5xx: percent(
            "enforcing_consecutive_5xx",
            value(enforcing_consecutive_5xx, d.enforcing_consecutive_5xx),
        )?,
        consecutive_gateway_failure: value(
            consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        enforcing_consecutive_gateway_failure: percent(
            "enforcing_consecutive_gateway_failure",
            value(
                enforcing_consecutive_gateway_failure,
                d.enforcing_consecutive_gateway_failure,
            ),
        )?,
        split_external_local_origin_errors: *split_external_local_origin_errors,
        consecutive_local_origin_failure: value(
            consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        enforcing_consecutive_local_origin_failure: percent(
            "enforcing_consecutive_local_origin_failure",
            value(
                enforcing_consecutive_local_origin_failure,
                d.enforcing_consecutive_local_origin_failure,
            ),
        )?,
        interval,
        base_ejection_time,
        max_ejection_time: duration_or(
            ctx,
            "max_ejection_time",
            max_ejection_time.as_ref(),
            d.max_ejection_time,
        )?,
        max_ejection_percent: percent(
            "max_ejection_percent",
            value(max_ejection_percent, d.max_ejection_percent),
        )?,
        always_eject_one_host: always_eject_one_host.is_some_and(|b| b.value),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    use super::outlier_detection;
    use crate::decode::error::{Ctx, Resource};
    use crate::model;

    fn u32v(v: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value: v })
    }

    /// What istiod writes for `outlierDetection: {consecutive5xxErrors: 2, interval: 1s,
    /// baseEjectionTime: 3m, maxEjectionPercent: 100}`.
    fn istiod_like() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: u32v(2),
            enforcing_consecutive_5xx: u32v(100),
            enforcing_success_rate: u32v(0),
            interval: Some(PbDuration {
                seconds: 1,
                nanos: 0,
            }),
            base_ejection_time: Some(PbDuration {
                seconds: 180,
                nanos: 0,
            }),
            max_ejection_percent: u32v(100),
            ..Default::default()
        }
    }

    #[test]
    fn istiods_outlier_detection_decodes_with_envoys_defaults_for_the_rest() {
        let r = Resource::cluster("c");
        let got = outlier_detection(&Ctx::new(&r), Some(&istiod_like()))
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            model::OutlierDetection {
                consecutive_5xx: 2,
                interval: Duration::from_secs(1),
                base_ejection_time: Duration::from_secs(180),
                max_ejection_percent: 100,
                ..model::OutlierDetection::default()
            }
        );
        assert_eq!(outlier_detection(&Ctx::new(&r), None).unwrap(), None);
    }

    #[test]
    fn success_rate_ejection_left_on_is_named() {
        let r = Resource::cluster("c");
        let on_by_default = OutlierDetection {
            enforcing_success_rate: None,
            ..istiod_like()
        };
        let e = outlier_detection(&Ctx::new(&r), Some(&on_by_default))
            .unwrap_err()
            .to_string();
        assert!(e.contains("enforcing_success_rate"), "{e}");
        let bad = OutlierDetection {
            max_ejection_percent: u32v(101),
            ..istiod_like()
        };
        let e = outlier_detection(&Ctx::new(&r), Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_ejection_percent") && e.contains("101"),
            "{e}"
        );
    }
}
