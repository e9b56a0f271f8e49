//! Typed extension configs (`name` + `typed_config`), identified the way Envoy picks a factory.

use std::fmt;

use envoy_types::pb::google::protobuf::{Any, Struct};
use prost::{Message, Name};

use super::error::{Ctx, DecodeError};
use crate::proto;

const UDPA_TYPED_STRUCT: &str = "udpa.type.v1.TypedStruct";
const XDS_TYPED_STRUCT: &str = "xds.type.v3.TypedStruct";

/// `udpa.type.v1.TypedStruct` and `xds.type.v3.TypedStruct` share this wire form.
#[derive(Clone, PartialEq, Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Struct>,
}

enum Config<'a> {
    Typed {
        type_name: &'a str,
        value: &'a [u8],
    },
    /// A TypedStruct: the config as JSON-like data, to be read as `type_name`.
    Struct {
        type_name: String,
        value: Struct,
    },
    None,
}

/// One extension: Envoy looks the factory up by the config's type URL (the inner one for a
/// TypedStruct) and only without a config by the extension's name.
pub(crate) struct Extension<'a> {
    name: &'a str,
    config: Config<'a>,
}

impl<'a> Extension<'a> {
    pub(crate) fn new(
        ctx: &Ctx,
        name: &'a str,
        typed_config: Option<&'a Any>,
    ) -> Result<Self, DecodeError> {
        let config = match typed_config {
            None => Config::None,
            Some(any) => {
                let type_name = type_name_of(&any.type_url);
                if type_name == UDPA_TYPED_STRUCT || type_name == XDS_TYPED_STRUCT {
                    let typed = TypedStruct::decode(any.value.as_slice()).map_err(|err| {
                        ctx.invalid("typed_config", format!("cannot decode {type_name}: {err}"))
                    })?;
                    match typed.type_url.is_empty() {
                        true => Config::None,
                        false => Config::Struct {
                            type_name: type_name_of(&typed.type_url).to_string(),
                            value: typed.value.unwrap_or_default(),
                        },
                    }
                } else {
                    Config::Typed {
                        type_name,
                        value: any.value.as_slice(),
                    }
                }
            }
        };
        Ok(Self { name, config })
    }

    /// Whether this is the extension whose config message is `T`, known as `name`.
    pub(crate) fn is<T: Name>(&self, name: &str) -> bool {
        match &self.config {
            Config::Typed { type_name, .. } => *type_name == T::full_name(),
            Config::Struct { type_name, .. } => *type_name == T::full_name(),
            Config::None => self.name == name,
        }
    }

    /// The config of an extension whose type has no descriptor here, when it came as a
    /// TypedStruct naming `type_name`: the Struct to read by hand.
    pub(crate) fn typed_struct(&self, type_name: &str) -> Option<&Struct> {
        match &self.config {
            Config::Struct {
                type_name: t,
                value,
            } if t == type_name => Some(value),
            _ => None,
        }
    }

    /// The extension's config as `T` (its defaults when there is none).
    pub(crate) fn config<T: Message + Name + Default>(&self, ctx: &Ctx) -> Result<T, DecodeError> {
        match &self.config {
            Config::Typed { value, .. } => T::decode(*value).map_err(|err| {
                ctx.invalid(
                    "typed_config",
                    format!("cannot decode {}: {err}", T::full_name()),
                )
            }),
            Config::Struct { value, .. } => proto::message_from_struct(value).map_err(|err| {
                ctx.invalid(
                    "typed_config",
                    format!("TypedStruct for {}: {err}", T::full_name()),
                )
            }),
            Config::None => Ok(T::default()),
        }
    }
}

impl fmt::Display for Extension<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.config {
            Config::Typed { type_name, .. } => write!(f, "{:?} ({type_name})", self.name),
            Config::Struct { type_name, .. } => {
                write!(f, "{:?} ({type_name} in a TypedStruct)", self.name)
            }
            Config::None => write!(f, "{:?}", self.name),
        }
    }
}

/// The message name a type URL points at: everything after its last `/`.
pub(crate) fn type_name_of(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}
