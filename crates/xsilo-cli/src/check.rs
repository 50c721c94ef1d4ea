//! `xsilo check`: a pre-flight for one party's deployment. It changes
//! nothing and joins no job: it loads the configuration as `init` does,
//! inspects the TLS files, tries the listen address, and probes every peer
//! (RFC 0001, "Probes"), printing one line per check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};
use xsilo::{Config, PartyName};
use xsilo_transport::{
    inspect_pem_files, IdentityMode, ProbeError, Prober, TlsIdentity, TransportConfig,
    TransportError,
};
use xsilo_wire::{RefusalCode, PROTOCOL_VERSION};

/// A certificate that expires within this is a warning.
const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One line of the report.
struct Line {
    check: String,
    status: Status,
    message: String,
    /// Measured figures, for `--json`.
    extra: Map<String, Value>,
}

/// Collects the lines and prints each as it comes.
struct Report {
    json: bool,
    lines: Vec<Line>,
}

impl Report {
    fn add(&mut self, check: impl Into<String>, status: Status, message: impl Into<String>) {
        self.add_with(check, status, message, Map::new());
    }

    fn add_with(
        &mut self,
        check: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        extra: Map<String, Value>,
    ) {
        // One line per check: a multi-line message (toml's, which quotes
        // the offending line) is folded.
        let message: String = message.into();
        let message = message
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        let line = Line {
            check: check.into(),
            status,
            message,
            extra,
        };
        if self.json {
            let mut obj = Map::new();
            obj.insert("check".into(), json!(line.check));
            obj.insert("status".into(), json!(line.status.as_str()));
            obj.insert("message".into(), json!(line.message));
            obj.extend(line.extra.clone());
            println!("{}", Value::Object(obj));
        } else {
            println!(
                "{:<7} {:<22} {}",
                line.status.as_str(),
                line.check,
                line.message
            );
        }
        self.lines.push(line);
    }

    fn count(&self, status: Status) -> usize {
        self.lines.iter().filter(|l| l.status == status).count()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs every check; returns whether all passed (warnings pass).
pub(crate) fn run(
    config_path: &Path,
    party: &str,
    throughput_mib: Option<u64>,
    json: bool,
) -> bool {
    let started = Instant::now();
    let mut report = Report {
        json,
        lines: Vec::new(),
    };
    checks(&mut report, config_path, party, throughput_mib);
    let (ok, warnings, errors) = (
        report.count(Status::Ok),
        report.count(Status::Warning),
        report.count(Status::Error),
    );
    let elapsed = started.elapsed();
    if json {
        println!(
            "{}",
            json!({
                "check": "summary",
                "status": if errors > 0 { "error" } else if warnings > 0 { "warning" } else { "ok" },
                "ok": ok, "warnings": warnings, "errors": errors,
                "elapsed_ms": ms(elapsed),
            })
        );
    } else {
        println!(
            "{ok} ok, {warnings} warning(s), {errors} error(s) in {:.2} s: {}",
            elapsed.as_secs_f64(),
            if errors == 0 {
                format!("party '{party}' is ready")
            } else {
                "fix the errors above and check again".to_owned()
            }
        );
    }
    errors == 0
}

fn checks(report: &mut Report, config_path: &Path, party: &str, throughput_mib: Option<u64>) {
    // The configuration, with init's errors.
    let party: PartyName = match party.parse() {
        Ok(p) => p,
        Err(e) => {
            report.add("party", Status::Error, format!("--party: {e}"));
            return;
        }
    };
    let config = match Config::from_file(config_path) {
        Ok(c) => c,
        Err(e) => {
            report.add("config", Status::Error, e.to_string());
            return;
        }
    };
    if let Err(e) = config.check_party(&party) {
        report.add(
            "config",
            Status::Error,
            format!("{}: {e}", config_path.display()),
        );
        return;
    }
    let names: Vec<&str> = config.parties.keys().map(PartyName::as_str).collect();
    report.add(
        "config",
        Status::Ok,
        format!(
            "{}: job '{}', party '{party}' of {} ({})",
            config_path.display(),
            config.job,
            names.len(),
            names.join(", ")
        ),
    );

    let tls = check_tls(report, &config, &party);
    let transport = config.transport_config_for(&party);
    let listen = check_listen(report, &config, &party, &transport);
    let Some(tls) = tls else {
        report.add(
            "peers",
            Status::Error,
            "not probed: the TLS files above must load first",
        );
        return;
    };
    check_peers(
        report,
        &config,
        &party,
        &tls,
        &transport,
        listen,
        throughput_mib,
    );
}

/// The TLS files: each problem on its own line. Returns the identity when
/// it loads as `init` loads it.
fn check_tls(report: &mut Report, config: &Config, party: &PartyName) -> Option<TlsIdentity> {
    let Some(paths) = &config.tls else {
        report.add(
            "tls",
            Status::Error,
            "no [tls] section: add ca, cert and key (PEM files; see `xsilo certs`)",
        );
        return None;
    };
    let (ca, cert, key) = (
        paths.ca.display().to_string(),
        paths.cert.display().to_string(),
        paths.key.display().to_string(),
    );
    let now = SystemTime::now();
    let parties: Vec<PartyName> = config.parties.keys().cloned().collect();
    let r = inspect_pem_files(&paths.ca, &paths.cert, &paths.key, party, &parties, now);
    match &r.ca {
        Ok(n) => report.add("tls.ca", Status::Ok, format!("{ca}: {n} CA certificate(s)")),
        Err(e) => report.add("tls.ca", Status::Error, format!("{e} (setting tls.ca)")),
    }
    match &r.cert {
        Ok(n) => report.add(
            "tls.cert",
            Status::Ok,
            format!("{cert}: {n} certificate(s)"),
        ),
        Err(e) => report.add("tls.cert", Status::Error, format!("{e} (setting tls.cert)")),
    }
    if let Some(chain) = &r.chain {
        match chain {
            Ok(()) => report.add(
                "tls.chain",
                Status::Ok,
                format!("{cert} is signed by the CA in {ca}, for server and client use"),
            ),
            Err(e) => report.add("tls.chain", Status::Error, e.to_string()),
        }
    }
    if let Some(validity) = &r.validity {
        match validity {
            Ok(v) => {
                let left = v.not_after.duration_since(now).unwrap_or_default();
                let days = left.as_secs() / 86_400;
                let until = date(v.not_after);
                let mut extra = Map::new();
                extra.insert("days_left".into(), json!(days));
                if left < RENEW_WITHIN {
                    report.add_with(
                        "tls.validity",
                        Status::Warning,
                        format!("{cert} expires on {until} (UTC), in {days} day(s): renew it soon"),
                        extra,
                    );
                } else {
                    report.add_with(
                        "tls.validity",
                        Status::Ok,
                        format!("{cert} is valid until {until} (UTC), {days} days from now"),
                        extra,
                    );
                }
            }
            Err(e) => report.add("tls.validity", Status::Error, e.to_string()),
        }
    }
    if let Some(name) = &r.name {
        match name {
            Ok(IdentityMode::Shared) => report.add(
                "tls.name",
                Status::Warning,
                format!(
                    "{cert} names no party of job '{}' ({}): a shared certificate, so party \
                     identities are not bound to certificates: any holder of a certificate \
                     the CA in {ca} signed (this shared one included) can claim any party \
                     name, '{party}' included; only the CA is checked. For identities bound \
                     to certificates, give each party a certificate naming it (DNS:{party})",
                    config.job,
                    if r.presented.is_empty() {
                        "it presents no DNS name".to_owned()
                    } else {
                        format!("it names {}", r.presented.join(", "))
                    }
                ),
            ),
            Ok(_) => report.add(
                "tls.name",
                Status::Ok,
                format!("{cert} names party '{party}' (DNS:{party})"),
            ),
            Err(e) => report.add("tls.name", Status::Error, e.to_string()),
        }
    }
    if let Some(k) = &r.key {
        match k {
            Ok(()) => report.add("tls.key", Status::Ok, format!("{key} fits {cert}")),
            Err(e) => report.add("tls.key", Status::Error, e.to_string()),
        }
    }
    // As init loads it (a problem above already has its line).
    let identity = config.tls_identity().ok()?;
    let usable = [
        r.ca.is_ok(),
        r.cert.is_ok(),
        matches!(r.key, Some(Ok(()))),
        matches!(r.name, Some(Ok(_))),
    ];
    usable.iter().all(|u| *u).then_some(identity)
}

fn date(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).date().to_string()
}

/// The listen address can be bound now (and is released at once).
fn check_listen(
    report: &mut Report,
    config: &Config,
    party: &PartyName,
    transport: &TransportConfig,
) -> Option<SocketAddr> {
    let listen = match config.listen_addr(party) {
        Ok(a) => a,
        Err(e) => {
            report.add("listen", Status::Error, e.to_string());
            return None;
        }
    };
    let key = if config.overrides.get(party).and_then(|o| o.listen).is_some() {
        format!("overrides.{party}.listen")
    } else {
        format!("parties.{party}")
    };
    match xsilo_transport::setup::bind_socket(listen, transport) {
        Ok(socket) => {
            drop(socket);
            report.add(
                "listen",
                Status::Ok,
                format!("UDP {listen} can be bound ({key})"),
            );
        }
        Err(e) => {
            let in_use = matches!(&e, xsilo_transport::SetupError::Bind { error, .. }
                if error.kind() == std::io::ErrorKind::AddrInUse);
            let hint = if in_use {
                format!(
                    "UDP {listen} is in use: is party '{party}' (or another program) already \
                     running on this machine? Stop it, or change {key}"
                )
            } else {
                format!("{e}: change {key} to an address of this machine")
            };
            report.add("listen", Status::Error, hint);
        }
    }
    Some(listen)
}

/// Probes every peer at once, then reports them in name order.
fn check_peers(
    report: &mut Report,
    config: &Config,
    party: &PartyName,
    tls: &TlsIdentity,
    transport: &TransportConfig,
    listen: Option<SocketAddr>,
    throughput_mib: Option<u64>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report.add(
                "peers",
                Status::Error,
                format!("cannot start a runtime: {e}"),
            );
            return;
        }
    };
    // Dial from the listen address's IP, as the party itself does.
    let ip = listen.map_or_else(|| std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    let book = config.address_book(party);
    if book.keys().all(|p| p == party) {
        report.add(
            "peers",
            Status::Ok,
            format!(
                "none: '{party}' is the only party of job '{}', nothing to probe",
                config.job
            ),
        );
        return;
    }
    let transfer = throughput_mib.unwrap_or(0) * 1024 * 1024;
    let results = rt.block_on(async {
        let prober = match Prober::bind(
            party.clone(),
            SocketAddr::new(ip, 0),
            tls,
            transport.clone(),
        ) {
            Ok(p) => Arc::new(p),
            Err(e) => return Err(e.to_string()),
        };
        let mut set = tokio::task::JoinSet::new();
        for (peer, addr) in book.iter().filter(|(p, _)| *p != party) {
            let (prober, job, peer, addr) = (
                prober.clone(),
                config.job.clone(),
                peer.clone(),
                addr.clone(),
            );
            set.spawn(async move {
                let result = prober.probe(&job, &peer, &addr, transfer).await;
                (peer, addr.addr, result)
            });
        }
        let mut results = BTreeMap::new();
        while let Some(done) = set.join_next().await {
            if let Ok((peer, addr, result)) = done {
                results.insert(peer, (addr, result));
            }
        }
        prober.close().await;
        Ok(results)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            report.add("peers", Status::Error, format!("cannot dial: {e}"));
            return;
        }
    };
    for (peer, (addr, result)) in results {
        report_peer(report, config, party, &peer, addr, result, transport);
    }
}

fn report_peer(
    report: &mut Report,
    config: &Config,
    party: &PartyName,
    peer: &PartyName,
    addr: SocketAddr,
    result: Result<xsilo_transport::ProbeReport, ProbeError>,
    transport: &TransportConfig,
) {
    let name = |what: &str| format!("{peer}.{what}");
    let mut extra = Map::new();
    extra.insert("peer".into(), json!(peer.as_str()));
    extra.insert("addr".into(), json!(addr.to_string()));
    report.add_with(
        name("address"),
        Status::Ok,
        format!("parties.{peer} is {addr}"),
        extra.clone(),
    );
    let probe = match result {
        Ok(p) => p,
        Err(e @ ProbeError::ServerCertificate { .. }) => {
            report.add_with(name("certificate"), Status::Error, e.to_string(), extra);
            return;
        }
        Err(ProbeError::Transport(e @ TransportError::Tls { .. })) => {
            report.add_with(
                name("certificate"),
                Status::Error,
                format!("{e}: '{peer}' and we must trust the same CA (tls.ca on both sides)"),
                extra,
            );
            return;
        }
        Err(e) => {
            report.add_with(name("handshake"), Status::Error, e.to_string(), extra);
            return;
        }
    };
    let mut timing = extra.clone();
    timing.insert("handshake_ms".into(), json!(ms(probe.handshake)));
    report.add_with(
        name("handshake"),
        Status::Ok,
        format!(
            "QUIC and TLS handshake with {addr} in {:.1} ms (within connect_timeout {:?})",
            ms(probe.handshake),
            transport.connect_timeout
        ),
        timing,
    );
    // A prober whose certificate binds its party required the server's to
    // name the peer; one with a shared certificate checked the chain only.
    let names = probe.server_names.join(", ");
    let other = config.parties.keys().find(|p| {
        *p != peer
            && probe
                .server_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&format!("DNS:{p}")))
    });
    if probe.server_names_peer {
        report.add_with(
            name("certificate"),
            Status::Ok,
            format!("the server at {addr} presents a certificate naming '{peer}', signed by our CA, and accepts ours"),
            extra.clone(),
        );
    } else if let Some(other) = other {
        report.add_with(
            name("certificate"),
            Status::Error,
            format!(
                "the server at {addr} presents a certificate naming party '{other}' ({names}), \
                 not '{peer}': is the address (or port) of '{peer}' in [parties] right?"
            ),
            extra,
        );
        return;
    } else {
        report.add_with(
            name("certificate"),
            Status::Ok,
            format!(
                "the server at {addr} presents a certificate signed by our CA that names no \
                 party of the job ({}): a shared certificate, so that it is '{peer}' rests on \
                 its word; it accepts ours",
                if names.is_empty() {
                    "no DNS name"
                } else {
                    names.as_str()
                }
            ),
            extra.clone(),
        );
    }
    match &probe.verdict {
        Ok(()) => report.add_with(
            name("hello"),
            Status::Ok,
            format!(
                "'{peer}' accepts job '{}' from party '{party}' (protocol version {PROTOCOL_VERSION})",
                config.job
            ),
            extra.clone(),
        ),
        Err(refusal) => {
            let fix = match refusal.code {
                RefusalCode::UnknownJob => format!(
                    "either '{peer}' runs another job (set `job` to the name in its configuration) or it has not started job '{}' yet",
                    config.job
                ),
                RefusalCode::UnknownParty => format!(
                    "'{peer}''s configuration must list '{party}' in [parties]"
                ),
                RefusalCode::VersionMismatch => {
                    "both parties must run the same xsilo protocol version".to_owned()
                }
                _ => "compare both parties' configurations and certificates".to_owned(),
            };
            let mut e = extra.clone();
            e.insert("refusal".into(), json!(format!("{:?}", refusal.code)));
            report.add_with(
                name("hello"),
                Status::Error,
                format!("'{peer}' refuses: {}: {fix}", refusal.message),
                e,
            );
        }
    }
    let mut rtt = extra.clone();
    rtt.insert("rtt_ms".into(), json!(ms(probe.round_trip)));
    rtt.insert("path_rtt_ms".into(), json!(ms(probe.path_rtt)));
    report.add_with(
        name("rtt"),
        Status::Ok,
        format!(
            "round trip {:.2} ms (hello to verdict; QUIC's path estimate {:.2} ms)",
            ms(probe.round_trip),
            ms(probe.path_rtt)
        ),
        rtt,
    );
    match probe.transfer {
        None => {}
        Some(Ok(t)) => {
            let mut e = extra;
            e.insert("bytes".into(), json!(t.bytes));
            e.insert(
                "mib_per_s".into(),
                json!((t.mib_per_s() * 10.0).round() / 10.0),
            );
            report.add_with(
                name("throughput"),
                Status::Ok,
                format!(
                    "{} MiB to '{peer}' in {:.1} ms: {:.1} MiB/s",
                    t.bytes / (1024 * 1024),
                    ms(t.elapsed),
                    t.mib_per_s()
                ),
                e,
            );
        }
        Some(Err(e)) => report.add_with(name("throughput"), Status::Error, e.to_string(), extra),
    }
}
