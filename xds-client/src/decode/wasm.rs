//! `envoy.extensions.filters.http.wasm.v3.Wasm`: only the two Istio plugins that Envoy runs
//! compiled in ("null VM") are recognised, by their plugin code name; any real Wasm module is
//! rejected.

use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, DataSource, async_data_source, data_source,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config::Vm};
use envoy_types::pb::google::protobuf::Any;

use super::error::{Ctx, DecodeError};

const NULL_RUNTIME: &str = "envoy.wasm.runtime.null";

/// A recognised null-VM plugin, with its `configuration`.
pub(crate) enum NullVmPlugin<'a> {
    MetadataExchange(Option<&'a Any>),
    Stats(Option<&'a Any>),
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn null_vm_plugin<'a>(ctx: &Ctx, pb: &'a Wasm) -> Result<NullVmPlugin<'a>, DecodeError> {
    let Wasm { config } = pb;
    let Some(PluginConfig {
        name: _,    // names the plugin's statistics and logs only
        root_id: _, // selects a root context inside a module; null-VM plugins have one
        configuration,
        fail_open: _, // what to do when the VM fails: a compiled-in plugin does not
        failure_policy: _,
        reload_config,
        capability_restriction_config,
        allow_on_headers_stop_iteration: _, // a Wasm ABI detail without meaning here
        vm,
    }) = config
    else {
        return Err(ctx.invalid("config", "is required"));
    };
    let ctx = ctx.at("config");
    ctx.unsupported_fields()
        .check("reload_config", reload_config.is_some())
        .check(
            "capability_restriction_config",
            capability_restriction_config.is_some(),
        )
        .finish()?;
    let code = match vm {
        Some(Vm::VmConfig(vm)) => null_vm_code(&ctx.at("vm_config"), vm)?,
        None => return Err(ctx.invalid("vm_config", "is required")),
    };
    match code.as_str() {
        "envoy.wasm.metadata_exchange" => {
            Ok(NullVmPlugin::MetadataExchange(configuration.as_ref()))
        }
        "envoy.wasm.stats" => Ok(NullVmPlugin::Stats(configuration.as_ref())),
        other => Err(ctx.unsupported(format!("null-VM Wasm plugin {other:?}"))),
    }
}

/// The plugin name a null VM loads (its `code.local.inline_string`).
fn null_vm_code(ctx: &Ctx, pb: &VmConfig) -> Result<String, DecodeError> {
    let VmConfig {
        vm_id: _, // shares one VM between plugins; null-VM plugins have none to share
        runtime,
        code,
        configuration,
        allow_precompiled: _,       // Wasm bytecode handling
        nack_on_code_cache_miss: _, // remote Wasm code fetching
        environment_variables,
        capability_restriction_config,
    } = pb;
    if runtime != NULL_RUNTIME {
        return Err(ctx.unsupported(format!("Wasm runtime {runtime:?} (a real Wasm module)")));
    }
    ctx.unsupported_fields()
        .check("configuration", configuration.is_some())
        .check("environment_variables", environment_variables.is_some())
        .check(
            "capability_restriction_config",
            capability_restriction_config.is_some(),
        )
        .finish()?;
    match code {
        Some(AsyncDataSource {
            specifier:
                Some(async_data_source::Specifier::Local(DataSource {
                    watched_directory: None,
                    specifier: Some(data_source::Specifier::InlineString(name)),
                })),
        }) => Ok(name.clone()),
        _ => Err(ctx.unsupported("code other than a local inline_string plugin name")),
    }
}
