//! The `[model]` section: which backend, how it is called (deadlines, limits, batching, retries,
//! breaker) and TLS to a server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::reader::Section;

/// Where predictions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A TensorFlow Serving-compatible gRPC server at `http://host:port`.
    TfServing { endpoint: String },
    /// A KServe v2 (Open Inference Protocol) gRPC server at `http://host:port`.
    KServe { endpoint: String },
    /// An ONNX model run in process.
    Onnx { path: PathBuf },
}

/// How tensors travel to a KServe v2 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorEncoding {
    /// Little-endian bytes in `raw_input_contents`: one copy, no per-element framing.
    Raw,
    /// Typed `contents` fields.
    Typed,
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub backend: Backend,
    /// How tensors travel (KServe v2 only).
    pub tensor_encoding: TensorEncoding,
    pub name: String,
    /// A fixed model version; the server's latest when `None`.
    pub version: Option<i64>,
    /// The signature to call when the plugin names none; the server's default when `None`.
    pub signature: Option<String>,
    /// Deadline of one call.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Calls in flight at once: the adaptive limit stays within these bounds.
    pub min_in_flight: usize,
    pub max_in_flight: usize,
    /// HTTP/2 connections to the server, used in turn.
    pub connections: usize,
    /// Rows stacked into one call at most; 1 sends every request alone.
    pub max_batch_size: usize,
    /// Retries of a call that may succeed later, while the server is up.
    pub retry: RetryPolicy,
    /// Consecutive failed calls that make the breaker hold every call back.
    pub breaker_failures: u32,
    /// First wait of the breaker before it probes the server; doubles while probes fail.
    pub breaker_cooldown: Duration,
    /// TLS to the model server (`https://` endpoints); the system's roots when `None`.
    pub tls: Option<TlsSettings>,
}

/// What the model client trusts and shows for TLS, read from PEM files at start-up.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// Certificates of the authorities the server's certificate must chain to; the system's
    /// roots when `None`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for servers that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; the endpoint's host when `None`.
    pub domain: Option<String>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// The retry budget of one call while the model server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Bound of the wait after the first failure; it doubles with each further failure.
    pub base: Duration,
    /// Largest bound.
    pub max: Duration,
}

pub(super) fn read_model(mut s: Section<'_>, config_dir: &Path) -> ModelSettings {
    let backend = read_backend(&mut s, config_dir);
    let name = match &backend {
        Some(Backend::Onnx { path }) if s.optional_string_peek("name").is_none() => path
            .file_stem()
            .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned()),
        _ => s.string("name"),
    };
    let version = match s.optional_integer("version") {
        Some(v) if v < 0 => {
            s.problem("version", format!("must not be negative, found {v}"));
            None
        }
        v => v,
    };
    let min_in_flight = s.count("min-in-flight", defaults::MODEL_MIN_IN_FLIGHT, 4096);
    let max_in_flight = s.count("max-in-flight", defaults::MODEL_MAX_IN_FLIGHT, 4096);
    if min_in_flight > max_in_flight {
        s.problem(
            "min-in-flight",
            format!("must not exceed max-in-flight ({max_in_flight}), found {min_in_flight}"),
        );
    }
    let https = matches!(
        &backend,
        Some(Backend::TfServing { endpoint } | Backend::KServe { endpoint })
            if endpoint.starts_with("https://")
    );
    let tls = read_tls(s.section("tls"), config_dir, https);
    let tensor_encoding = s.one_of(
        "tensor-encoding",
        &[
            ("raw", TensorEncoding::Raw),
            ("typed", TensorEncoding::Typed),
        ],
        TensorEncoding::Raw,
    );
    ModelSettings {
        backend: backend.unwrap_or(Backend::Onnx {
            path: PathBuf::new(),
        }),
        tensor_encoding,
        name,
        version,
        signature: s.optional_string("signature"),
        timeout: s.duration("timeout", defaults::MODEL_TIMEOUT),
        connect_timeout: s.duration("connect-timeout", defaults::MODEL_CONNECT_TIMEOUT),
        min_in_flight,
        max_in_flight,
        connections: s.count("connections", defaults::MODEL_CONNECTIONS, 64),
        max_batch_size: s.count("max-batch-size", defaults::MODEL_MAX_BATCH_SIZE, 65_536),
        retry: RetryPolicy {
            attempts: s.count("retry-attempts", defaults::RETRY_ATTEMPTS, 100) as u32,
            base: s.duration("retry-backoff", defaults::RETRY_BACKOFF),
            max: s.duration("retry-backoff-max", defaults::RETRY_BACKOFF_MAX),
        },
        breaker_failures: s.count("breaker-failures", defaults::BREAKER_FAILURES, 10_000) as u32,
        breaker_cooldown: s.duration("breaker-cooldown", defaults::BREAKER_COOLDOWN),
        tls,
    }
}

/// `model.tls`: PEM files relative to the config file, for an `https://` endpoint.
fn read_tls(mut s: Section<'_>, config_dir: &Path, https: bool) -> Option<TlsSettings> {
    let given = ["ca", "cert", "key", "domain"].map(|k| s.optional_string(k));
    let [ca, cert, key, domain] = given;
    if ca.is_none() && cert.is_none() && key.is_none() && domain.is_none() {
        return None;
    }
    if !https {
        s.problem(
            "ca",
            "model.tls applies to a model server reached over TLS: write the endpoint https://…",
        );
    }
    let pem = |s: &mut Section<'_>, key: &str, path: Option<String>| {
        let path = config_dir.join(path?);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Some(bytes),
            Ok(_) => {
                s.problem(key, format!("{} holds no PEM block", path.display()));
                None
            }
            Err(e) => {
                s.problem(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    };
    let ca = pem(&mut s, "ca", ca);
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            pem(&mut s, "cert", Some(cert)).zip(pem(&mut s, "key", Some(key)))
        }
        (None, None) => None,
        (Some(_), None) => {
            s.problem(
                "key",
                "required with cert (the client certificate's private key)",
            );
            None
        }
        (None, Some(_)) => {
            s.problem("cert", "required with key (the client certificate)");
            None
        }
    };
    Some(TlsSettings {
        ca,
        identity,
        domain,
    })
}

/// `model.endpoint` names a server, `model.path` an ONNX file (relative to the config file);
/// `model.backend` chooses when both are set.
fn read_backend(s: &mut Section<'_>, config_dir: &Path) -> Option<Backend> {
    let kind = s.optional_string("backend");
    let endpoint = s.optional_string("endpoint");
    let path = s.optional_string("path");
    let url = |s: &mut Section<'_>, endpoint: String| {
        let is_url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !is_url {
            s.problem(
                "endpoint",
                format!("expected a URL like \"http://127.0.0.1:8500\", found {endpoint:?}"),
            );
        }
        is_url.then_some(endpoint)
    };
    match (kind.as_deref(), endpoint, path) {
        (Some("tf-serving") | None, Some(endpoint), None)
        | (Some("tf-serving"), Some(endpoint), Some(_)) => {
            url(s, endpoint).map(|endpoint| Backend::TfServing { endpoint })
        }
        (Some("kserve"), Some(endpoint), _) => {
            url(s, endpoint).map(|endpoint| Backend::KServe { endpoint })
        }
        (Some("onnx") | None, None, Some(path)) | (Some("onnx"), Some(_), Some(path)) => {
            Some(Backend::Onnx {
                path: config_dir.join(path),
            })
        }
        (Some(kind @ ("tf-serving" | "kserve")), None, _) => {
            s.problem("endpoint", format!("required with backend {kind:?}"));
            None
        }
        (Some("onnx"), _, None) => {
            s.problem("path", "required with backend \"onnx\"");
            None
        }
        (Some(other), _, _) => {
            s.problem(
                "backend",
                format!("expected \"tf-serving\", \"kserve\" or \"onnx\", found {other:?}"),
            );
            None
        }
        (None, Some(_), Some(_)) => {
            s.problem(
                "backend",
                "both endpoint and path are set: choose with backend = \"tf-serving\", \"kserve\" or \"onnx\"",
            );
            None
        }
        (None, None, None) => {
            s.problem(
                "endpoint",
                "set endpoint (a TensorFlow Serving-compatible server) or path (an ONNX model run in process)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, parse, problems};
    use super::super::*;

    #[test]
    fn the_backend_follows_endpoint_or_path_and_onnx_paths_are_relative_to_the_config() {
        let onnx = "[kafka]\nbrokers = \"b\"\ngroup-id = \"g\"\ninput-topic = \"i\"\noutput-topic = \"o\"\ndead-letter-topic = \"d\"\n[model]\npath = \"../models/m.onnx\"\n";
        let ovs: Vec<Override> = Vec::new();
        let s = from_str(
            onnx,
            Path::new("/etc/app/config.toml"),
            Mode::Stream,
            Path::new("p.wasm"),
            &ovs,
        )
        .expect("valid");
        assert_eq!(
            s.model.backend,
            Backend::Onnx {
                path: PathBuf::from("/etc/app/../models/m.onnx")
            }
        );
        assert_eq!(
            s.model.name, "m",
            "an embedded model is named after its file"
        );

        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(
            s.model.backend,
            Backend::TfServing {
                endpoint: "http://127.0.0.1:8500".into()
            }
        );

        let both = problems(parse(MINIMAL, &["model.path=m.onnx"]).expect_err("ambiguous"));
        assert!(
            both.iter().any(|p| p.starts_with("model.backend: both")),
            "{both:?}"
        );
        let s = parse(MINIMAL, &["model.path=m.onnx", "model.backend=onnx"]).expect("chosen");
        assert!(matches!(s.model.backend, Backend::Onnx { .. }));
        let bad = problems(parse(MINIMAL, &["model.backend=triton"]).expect_err("unknown"));
        assert!(
            bad.iter().any(|p| p.contains("\"kserve\" or \"onnx\"")),
            "{bad:?}"
        );
        let s = parse(MINIMAL, &["model.backend=kserve"]).expect("kserve");
        assert_eq!(
            s.model.backend,
            Backend::KServe {
                endpoint: "http://127.0.0.1:8500".into()
            }
        );
        assert_eq!(s.model.tensor_encoding, TensorEncoding::Raw);
        let s = parse(
            MINIMAL,
            &["model.backend=kserve", "model.tensor-encoding=typed"],
        )
        .expect("typed");
        assert_eq!(s.model.tensor_encoding, TensorEncoding::Typed);
    }
}
