//! One loaded pack: its description, module bytes and how to compile it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use extism::{CompiledPlugin, Manifest, PluginBuilder, UserData, Val, ValType, Wasm};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::EffectiveLimits;
use crate::manifest::{Bodies, Field, Method, Permissions};

/// What `pack list` shows and what the agent may log about a pack.
#[derive(Debug, Clone, Serialize)]
pub struct PackInfo {
    /// `name@version`.
    pub id: String,
    /// Pack name, also the namespace of its captures.
    pub name: String,
    /// Pack version.
    pub version: String,
    /// Human description.
    pub description: String,
    /// The hooks that will be called, in the order pre, chunk, post.
    pub methods: Vec<Method>,
    /// What the pack may see.
    pub permissions: Permissions,
    /// When the bodies the permission allows are given (the manifest's `bodies`).
    pub bodies: Bodies,
    /// The configuration goes only into the first call of each instance (the manifest's
    /// `configurationOnce`, this agent's own key): the pack keeps it, as the pack kit does.
    pub configuration_once: bool,
    /// Host patterns the pack is called for; `None` means every host.
    pub domains: Option<Vec<String>>,
    /// User settings the pack declares.
    pub fields: Vec<Field>,
    /// Dashboard hints, kept as shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charts: Option<Value>,
    /// The configuration the pack receives (`config.json` over the fields' defaults).
    pub configuration: Map<String, Value>,
    /// Whether the module imports WASI (then WASI is on for it, with no files and no network).
    pub wasi: bool,
    /// The folder holding the pack.
    pub dir: PathBuf,
    /// sha-256 of `pack.wasm`, lower-case hex.
    pub sha256: String,
    /// The limits in force for this pack.
    pub limits: EffectiveLimits,
}

/// A pack ready to be compiled for a worker. Shared by every worker.
#[derive(Debug, Clone)]
pub(crate) struct PackDef {
    pub info: PackInfo,
    pub wasm: Arc<[u8]>,
    pub domains: crate::domain::DomainFilter,
    /// `info.configuration` as JSON text, written into every hook input.
    pub configuration_json: Box<RawValue>,
    /// The values of the environment variables listed in `permissions.environment`, read at
    /// load, as JSON text. `None` when the pack lists none.
    pub environment_json: Option<Box<RawValue>>,
    pub has_pre: bool,
    pub has_post: bool,
    pub has_chunk: bool,
}

/// WASI `errno` for "not supported".
const WASI_ENOTSUP: i32 = 58;

impl PackDef {
    /// Compiles the module with its limits in an engine of its own.
    ///
    /// Each call makes a new wasmtime engine: an Extism timeout bumps its engine's epoch and
    /// kills every call running in that engine, so workers never share one (see
    /// docs/pack-runtime.md). With `cache_config` set, wasmtime reads the compiled code back
    /// from its cache instead of compiling again.
    pub fn compile(&self, cache_config: Option<&Path>) -> Result<CompiledPlugin, extism::Error> {
        let limits = &self.info.limits;
        let manifest = Manifest::new([Wasm::data(self.wasm.to_vec())])
            .with_timeout(limits.timeout)
            .with_memory_max(limits.memory_max_pages)
            .disallow_all_hosts();
        let mut builder = PluginBuilder::new(manifest).with_wasi(self.info.wasi);
        builder = match cache_config {
            Some(path) => builder.with_cache_config(path),
            None => builder.with_cache_disabled(),
        };
        if let Some(fuel) = limits.fuel {
            builder = builder.with_fuel_limit(fuel);
        }
        if self.info.wasi {
            // WASI's poll_oneoff can put the thread to sleep in the host, where neither the
            // timeout nor fuel reach it; packs have no business waiting.
            builder = builder.with_function_in_namespace(
                "wasi_snapshot_preview1",
                "poll_oneoff",
                [ValType::I32, ValType::I32, ValType::I32, ValType::I32],
                [ValType::I32],
                UserData::new(()),
                |_plugin, _inputs, outputs, _data| {
                    if let Some(out) = outputs.first_mut() {
                        *out = Val::I32(WASI_ENOTSUP);
                    }
                    Ok(())
                },
            );
        }
        builder.compile()
    }

    /// Whether the request body goes into this pack's call of an exchange whose response has
    /// `status` (`None` in `pre`).
    pub fn gets_request_body(&self, status: Option<u16>) -> bool {
        self.info.permissions.body && self.info.bodies.request.given(status)
    }

    /// Whether the response body (or a piece of it) goes into this pack's call of an exchange
    /// whose response has `status`.
    pub fn gets_response_body(&self, status: u16) -> bool {
        self.info.permissions.body && self.info.bodies.response.given(Some(status))
    }

    /// Whether the pack exports and wants `method`.
    pub fn calls(&self, method: Method) -> bool {
        match method {
            Method::Pre => self.has_pre,
            Method::Post => self.has_post,
            Method::Chunk => self.has_chunk,
        }
    }
}
