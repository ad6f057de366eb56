//! `[catalog]`, `[history]`, `[server]` and `[pushgateway]`: where icewatch reads tables, keeps
//! its history, serves `/metrics` and pushes. Each section's keys, defaults and meanings are in
//! its table below; it reads no other section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::diagnostics::shortened;
use crate::config::reader::{Key, Reader, Section, join};
use crate::config::{
    CatalogConfig, CatalogKind, DEFAULT_LISTEN, HistoryConfig, PasswordHash, PointRetention, PushgatewayConfig, Secret,
    ServerConfig, ServerTlsConfig,
};
use crate::history::HistoryLocation;

pub(in crate::config) const CATALOG_KEYS: &[Key] = &[
    Key {
        name: "type",
        default: "required",
        doc: "`sql`: a SQL catalog in SQLite or PostgreSQL (as PyIceberg's `SqlCatalog`, Spark's `JdbcCatalog` and iceberg-rust write it). `rest`: an Iceberg REST catalog.",
    },
    Key {
        name: "uri",
        default: "required",
        doc: "`sql`: `sqlite://path/to/catalog.db` (relative to the config file) or `postgres://user:${PASSWORD}@host:5432/db`. `rest`: `http(s)://host:port/...`.",
    },
    Key {
        name: "warehouse",
        default: "required for `sql`",
        doc: "Warehouse location: a local folder (relative to the config file) or an object-store URI such as `s3://bucket/prefix`. For `rest`, passed to the catalog as its `warehouse` property.",
    },
    Key {
        name: "name",
        default: r#"`"default"`"#,
        doc: "Catalog name inside a SQL catalog (the `catalog_name` column; PyIceberg's default is `default`). For `rest`, a label.",
    },
    Key { name: "token", default: "none", doc: "Bearer token for a REST catalog (a secret: use `${VAR}`)." },
    Key { name: "credential", default: "none", doc: "OAuth2 `client_id:client_secret` for a REST catalog (a secret)." },
    Key { name: "s3_endpoint", default: "none", doc: "S3-compatible endpoint (`http://minio:9000`)." },
    Key { name: "s3_region", default: "none", doc: "S3 region." },
    Key { name: "s3_access_key_id", default: "none", doc: "S3 access key id." },
    Key { name: "s3_secret_access_key", default: "none", doc: "S3 secret key (a secret)." },
    Key { name: "s3_session_token", default: "none", doc: "S3 session token (a secret)." },
    Key {
        name: "s3_path_style_access",
        default: "none",
        doc: "Path-style S3 URLs (`true` for MinIO and most S3-compatible stores).",
    },
    Key {
        name: "properties",
        default: "`{}`",
        doc: r#"Any other catalog or FileIO property, passed as is (`"s3.endpoint"`, `"client.region"`, `"pool.max-connections"`...). Keys here win over the named keys above."#,
    },
];

const CATALOG_TYPES: &[&str] = &["sql", "rest"];

pub(in crate::config) const HISTORY_KEYS: &[Key] = &[
    Key {
        name: "path",
        default: r#"`"icewatch-history.db"`"#,
        doc: "A SQLite file (relative to the config file; created when missing; `sqlite://` prefix allowed) or a `postgres://` URI for a shared, durable history.",
    },
    Key {
        name: "retention",
        default: r#"`"90d"`"#,
        doc: "Points older than this are deleted (at start-up, then hourly, in bounded steps), except each series' newest `keep_points`. Raised to twice the longest volume `window` of the config when that is longer.",
    },
    Key {
        name: "sensor_retention",
        default: "`{}`",
        doc: "Per sensor kind, a retention instead of `retention` for that kind's series, e.g. `{ distribution = \"30d\" }`.",
    },
    Key {
        name: "keep_points",
        default: "`1000`",
        doc: "The newest points of every series kept whatever their age, so a count window of a table that commits rarely stays full. Raised to twice the largest `window` (or volume `points`) of the config when that is larger.",
    },
];

pub(in crate::config) const SERVER_KEYS: &[Key] = &[
    Key {
        name: "listen",
        default: r#"`"127.0.0.1:9464"`"#,
        doc: "`host:port` to bind; `0.0.0.0:9464` for every interface (containers)",
    },
    Key {
        name: "shutdown_grace",
        default: r#"`"30s"`"#,
        doc: "after SIGTERM/SIGINT (and during a reload), how long sensor runs already going may finish before they are stopped",
    },
    Key {
        name: "tls_cert_file",
        default: "none",
        doc: "PEM certificate chain (server certificate first); with `tls_key_file`, the endpoints speak HTTPS only. Relative paths resolve against the config file's folder",
    },
    Key { name: "tls_key_file", default: "none", doc: "PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate" },
    Key {
        name: "basic_auth_users",
        default: "none",
        doc: "table of user name → **bcrypt hash** of the password; when set, every endpoint (including `/healthz`, `/readyz` and `/-/reload`) answers 401 without valid credentials",
    },
    Key {
        name: "runbook_base_url",
        default: r#"`"https://github.com/icewatch/icewatch/blob/main/docs/runbooks"`"#,
        doc: "where your copy of `docs/runbooks/` is served (an `http://` or `https://` URL; a trailing `/` is dropped). `check`, its JSON and the status page link each problem to a section under it, and icewatch exports it as `icewatch_runbook_info{base_url}`, from which the alerts' `runbook_url` is built",
    },
];

pub(in crate::config) const PUSHGATEWAY_KEYS: &[Key] = &[
    Key { name: "url", default: "required", doc: "Base URL of the Pushgateway (`http://pushgateway:9091`)." },
    Key { name: "job", default: r#"`"icewatch"`"#, doc: "The `job` grouping key." },
    Key { name: "instance", default: "the host name", doc: "The `instance` grouping key." },
    Key {
        name: "grouping",
        default: "`{}`",
        doc: r#"More grouping labels (`{ env = "prod" }`); `job` cannot be set here."#,
    },
    Key { name: "timeout", default: r#"`"10s"`"#, doc: "Timeout of one push." },
    Key { name: "retries", default: "`3`", doc: "Retries of a failed push (with backoff)." },
    Key { name: "username", default: "none", doc: "HTTP basic-auth user." },
    Key { name: "password", default: "none", doc: "HTTP basic-auth password (a secret: use `${VAR}`)." },
    Key {
        name: "delete_on_shutdown",
        default: "`false`",
        doc: "On shutdown delete the group instead of pushing a last time with `icewatch_up 0`.",
    },
    Key {
        name: "ca_file",
        default: "none",
        doc: "PEM file of a CA to trust for `https://` (relative to the config file).",
    },
    Key {
        name: "insecure_skip_verify",
        default: "`false`",
        doc: "Do not verify the Pushgateway's certificate (testing only).",
    },
];

impl Reader<'_> {
    pub(super) fn catalog(&mut self, root: &Section<'_>) -> Option<CatalogConfig> {
        let Some(section) = self.section(root, "catalog") else {
            if root.table.get("catalog").is_none() {
                self.problem_at(Some((0, 0)), "catalog", "missing required table `[catalog]`");
            }
            return None;
        };
        self.check_keys(&section, &[CATALOG_KEYS], "[catalog]");
        let kind = match section.table.get("type") {
            None => {
                self.problem_at(section.span, "catalog.type", "missing required key `type` (`sql` or `rest`)");
                None
            }
            Some(_) => self
                .choice(&section, "type", CATALOG_TYPES)
                .map(|kind| if kind == "rest" { CatalogKind::Rest } else { CatalogKind::Sql }),
        };
        let uri = self.required_string(&section, "uri");
        let uri_span = Reader::value_span(&section, "uri");
        // `validate --online` reports a catalog it cannot open at this key.
        self.remember("catalog.uri", uri_span);
        let uri = match (kind, uri) {
            (Some(CatalogKind::Sql), Some(uri)) => self.sql_catalog_uri(&uri, uri_span),
            (Some(CatalogKind::Rest), Some(uri)) => {
                if uri.starts_with("http://") || uri.starts_with("https://") {
                    Some(uri)
                } else {
                    self.problem_at(
                        uri_span,
                        "catalog.uri",
                        "a REST catalog URI must start with `http://` or `https://`",
                    );
                    None
                }
            }
            _ => None,
        };
        let warehouse = self
            .string(&section, "warehouse")
            .map(|warehouse| if warehouse.contains("://") { warehouse } else { self.absolute(&warehouse) });
        if kind == Some(CatalogKind::Sql) && warehouse.is_none() && section.table.get("warehouse").is_none() {
            self.problem_at(
                section.span,
                "catalog.warehouse",
                "missing required key `warehouse` (a SQL catalog needs a warehouse location)",
            );
        }
        let name = self.string(&section, "name").unwrap_or_else(|| "default".to_string());
        if section.table.get("name").is_some() {
            self.remember("catalog.name", Reader::value_span(&section, "name"));
        }
        if name.trim().is_empty() {
            let span = Reader::value_span(&section, "name");
            self.problem_at(span, "catalog.name", "the catalog name cannot be empty");
        }

        let mut properties = BTreeMap::new();
        for (key, property) in [
            ("token", "token"),
            ("credential", "credential"),
            ("s3_endpoint", iceberg::io::S3_ENDPOINT),
            ("s3_region", iceberg::io::S3_REGION),
            ("s3_access_key_id", iceberg::io::S3_ACCESS_KEY_ID),
            ("s3_secret_access_key", iceberg::io::S3_SECRET_ACCESS_KEY),
            ("s3_session_token", iceberg::io::S3_SESSION_TOKEN),
        ] {
            if let Some(value) = self.string(&section, key) {
                properties.insert(property.to_string(), Secret::new(value));
            }
        }
        if let Some(path_style) = self.boolean(&section, "s3_path_style_access") {
            properties.insert(iceberg::io::S3_PATH_STYLE_ACCESS.to_string(), Secret::new(path_style.to_string()));
        }
        for (key, value) in self.string_map(&section, "properties") {
            properties.insert(key, Secret::new(value));
        }
        Some(CatalogConfig { kind: kind?, uri: Secret::new(uri?), warehouse, name, properties })
    }

    /// Checks a SQL catalog URI and makes a relative SQLite path absolute.
    fn sql_catalog_uri(&mut self, uri: &str, span: Option<(usize, usize)>) -> Option<String> {
        if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
            return Some(uri.to_string());
        }
        let Some(rest) = uri.strip_prefix("sqlite:") else {
            self.problem_at(span, "catalog.uri", "a SQL catalog URI must start with `sqlite:` or `postgres://`");
            return None;
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (file, query) = rest.split_once('?').map_or((rest, None), |(file, query)| (file, Some(query)));
        if file.is_empty() {
            self.problem_at(
                span,
                "catalog.uri",
                "the SQLite URI has no file path (expected `sqlite://path/to/catalog.db`)",
            );
            return None;
        }
        if file == ":memory:" {
            return Some(uri.to_string());
        }
        let absolute = self.absolute(file);
        Some(match query {
            Some(query) => format!("sqlite://{absolute}?{query}"),
            None => format!("sqlite://{absolute}"),
        })
    }

    pub(super) fn history(&mut self, root: &Section<'_>) -> Option<HistoryConfig> {
        let default_path = || HistoryLocation::Sqlite(PathBuf::from("icewatch-history.db"));
        let Some(section) = self.section(root, "history") else {
            if root.table.get("history").is_some() {
                return None;
            }
            let HistoryLocation::Sqlite(path) = default_path() else { return None };
            return Some(HistoryConfig {
                location: HistoryLocation::Sqlite(self.resolve(&path.to_string_lossy())),
                retention: PointRetention::default(),
            });
        };
        self.check_keys(&section, &[HISTORY_KEYS], "[history]");
        let location = match self.string(&section, "path") {
            None if section.table.get("path").is_some() => return None,
            None => HistoryLocation::Sqlite(self.resolve("icewatch-history.db")),
            Some(path) if path.starts_with("postgres://") || path.starts_with("postgresql://") => {
                HistoryLocation::Postgres(path)
            }
            Some(path) => {
                let file = path.strip_prefix("sqlite://").or_else(|| path.strip_prefix("sqlite:")).unwrap_or(&path);
                if file.trim().is_empty() {
                    let span = Reader::value_span(&section, "path");
                    self.problem_at(span, "history.path", "expected a file path or a `postgres://` URI");
                    return None;
                }
                HistoryLocation::Sqlite(self.resolve(file))
            }
        };
        let retention = self.point_retention(&section);
        Some(HistoryConfig { location, retention })
    }

    fn point_retention(&mut self, section: &Section<'_>) -> PointRetention {
        let mut retention = PointRetention::default();
        if let Some(max_age) = self.duration(section, "retention") {
            retention.max_age = max_age;
        }
        if let Some(keep) = self.integer(section, "keep_points", 1, 100_000_000) {
            retention.keep_points = keep as usize;
        }
        if let Some(by_sensor) = self.section(section, "sensor_retention") {
            let kinds: Vec<&str> = crate::config::sections::tables::declared_kinds()
                .all
                .iter()
                .map(|kind| kind.as_str())
                .filter(|kind| *kind != "lineage")
                .collect();
            for (sensor, _) in by_sensor.table.iter() {
                if !kinds.contains(&sensor) {
                    let span = by_sensor.table.key(sensor).and_then(|key| key.span());
                    let suggestion = crate::config::did_you_mean(sensor, &kinds)
                        .map(|candidate| format!(" (did you mean `{candidate}`?)"))
                        .unwrap_or_default();
                    let message = format!(
                        "unknown sensor kind `{}`{suggestion}; valid kinds are {}",
                        shortened(sensor),
                        kinds.iter().map(|kind| format!("`{kind}`")).collect::<Vec<_>>().join(", ")
                    );
                    self.problem(span, &join(&by_sensor.path, sensor), message);
                    continue;
                }
                if let Some(max_age) = self.duration(&by_sensor, sensor) {
                    retention.by_sensor.insert(sensor.to_string(), max_age);
                }
            }
        }
        retention
    }

    pub(super) fn server(&mut self, root: &Section<'_>) -> Option<ServerConfig> {
        let default = DEFAULT_LISTEN;
        let Some(section) = self.section(root, "server") else {
            return root.table.get("server").is_none().then_some(ServerConfig::new(default));
        };
        self.check_keys(&section, &[SERVER_KEYS], "[server]");
        let listen = match self.string_with_raw(&section, "listen") {
            None if section.table.get("listen").is_some() => return None,
            None => default,
            Some((value, raw)) => match SocketAddr::from_str(&value) {
                Ok(address) => address,
                Err(_) => {
                    let span = Reader::value_span(&section, "listen");
                    self.problem_at(span, "server.listen", format!("invalid listen address `{}`: expected `host:port` such as `127.0.0.1:9464` or `0.0.0.0:9464`", shortened(&raw)));
                    return None;
                }
            },
        };
        let mut server = ServerConfig::new(listen);
        if let Some(grace) = self.duration(&section, "shutdown_grace") {
            server.shutdown_grace = grace;
        }
        let cert_file = self.path_value(&section, "tls_cert_file");
        let key_file = self.path_value(&section, "tls_key_file");
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => server.tls = Some(ServerTlsConfig { cert_file, key_file }),
            (None, None) => {}
            (Some(_), None) => {
                let span = Reader::value_span(&section, "tls_cert_file");
                self.problem_at(span, "server.tls_cert_file", "`tls_cert_file` needs `tls_key_file` too");
            }
            (None, Some(_)) => {
                let span = Reader::value_span(&section, "tls_key_file");
                self.problem_at(span, "server.tls_key_file", "`tls_key_file` needs `tls_cert_file` too");
            }
        }
        if let Some(base) = self.string(&section, "runbook_base_url") {
            if base.starts_with("http://") || base.starts_with("https://") {
                server.runbook_base_url = base.trim_end_matches('/').to_string();
            } else {
                let span = Reader::value_span(&section, "runbook_base_url");
                self.problem_at(
                    span,
                    "server.runbook_base_url",
                    "expected an `http://` or `https://` URL, such as `https://github.com/your-org/icewatch/blob/main/docs/runbooks`",
                );
            }
        }
        if let Some(users) = self.section(&section, "basic_auth_users") {
            for (user, _) in users.table.iter() {
                let Some(hash) = self.string(&users, user) else { continue };
                if bcrypt_cost(&hash).is_none() {
                    let span = Reader::value_span(&users, user);
                    self.problem_at(span, &join("server.basic_auth_users", user), "expected a bcrypt hash (`$2b$` or `$2y$`, 60 characters), e.g. from `htpasswd -nBC 10 user`; never the password itself");
                    continue;
                }
                server.basic_auth_users.insert(user.to_string(), PasswordHash(hash));
            }
        }
        Some(server)
    }

    pub(super) fn pushgateway(&mut self, root: &Section<'_>) -> Option<Option<PushgatewayConfig>> {
        let Some(section) = self.section(root, "pushgateway") else {
            return root.table.get("pushgateway").is_none().then_some(None);
        };
        self.check_keys(&section, &[PUSHGATEWAY_KEYS], "[pushgateway]");
        let url = self.required_string(&section, "url");
        let url = url.and_then(|url| {
            if url.starts_with("http://") || url.starts_with("https://") {
                Some(url.trim_end_matches('/').to_string())
            } else {
                let span = Reader::value_span(&section, "url");
                self.problem_at(span, "pushgateway.url", "expected an `http://` or `https://` URL");
                None
            }
        });
        let job = self.string(&section, "job").unwrap_or_else(|| "icewatch".to_string());
        let mut grouping: BTreeMap<String, String> = self.string_map(&section, "grouping").into_iter().collect();
        let instance = self.string(&section, "instance").unwrap_or_else(host_name);
        grouping.entry("instance".to_string()).or_insert(instance);
        if grouping.contains_key("job") {
            let span = Reader::value_span(&section, "grouping");
            self.problem_at(span, "pushgateway.grouping.job", "set the job with `pushgateway.job`, not in `grouping`");
        }
        let timeout = self.duration(&section, "timeout").unwrap_or(Duration::from_secs(10));
        let retries = self.integer(&section, "retries", 0, 20).unwrap_or(3) as u32;
        let username = self.string(&section, "username");
        let password = self.string(&section, "password").map(Secret::new);
        let delete_on_shutdown = self.boolean(&section, "delete_on_shutdown").unwrap_or(false);
        let ca_file = self.path_value(&section, "ca_file");
        let insecure_skip_verify = self.boolean(&section, "insecure_skip_verify").unwrap_or(false);
        Some(Some(PushgatewayConfig {
            url: url?,
            job,
            grouping,
            timeout,
            retries,
            username,
            password,
            delete_on_shutdown,
            ca_file,
            insecure_skip_verify,
        }))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "icewatch".to_string())
}

/// The cost of a well-formed bcrypt hash (`$2a$`/`$2b$`/`$2x$`/`$2y$`, two-digit cost 4..=31,
/// 53 characters of salt and hash), else `None`.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"].iter().find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, tail) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|cost| (4..=31).contains(cost))?;
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    (tail.len() == 53 && tail.chars().all(alphabet)).then_some(cost)
}
