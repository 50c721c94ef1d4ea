//! Simulation mode (promise M7): every party of a job in one process, each
//! running the very same driver code with its own [`Fed`], over the
//! in-memory transport or over QUIC on loopback with certificates made in
//! memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use xsilo_runtime::{Runtime, RuntimeError};
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{MemoryNetwork, PeerAddress, QuicEndpoint, Transport};
use xsilo_wire::{JobName, PartyName};

use crate::config::{CommConfig, ConfigError, ExecutionConfig};
use crate::error::Error;
use crate::fed::Fed;

/// Which transport a simulation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimNetwork {
    /// In-memory channels: fastest, for tests of the driver logic.
    Memory,
    /// Real QUIC with mutual TLS on 127.0.0.1, development certificates
    /// generated in memory.
    Quic,
}

/// All parties of a job in one process.
///
/// ```
/// # fn main() -> Result<(), xsilo::Error> {
/// let results = xsilo::block_on(async {
///     xsilo::Simulation::new(&["alice", "bob"])?
///         .run(|fed| async move {
///             let x = fed.party("alice").task((), |()| 20);
///             let y = fed.party("bob").task(x, |x: i32| x + 1);
///             let v = fed.get(&y).await?;
///             fed.shutdown().await?;
///             Ok(v)
///         })
///         .await
/// })?;
/// for (party, value) in results {
///     assert_eq!(value?, 21, "in party {party}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Simulation {
    job: JobName,
    parties: Vec<PartyName>,
    network: SimNetwork,
    comm: CommConfig,
    execution: ExecutionConfig,
}

impl Simulation {
    /// A simulation of job `simulation` with these parties, in memory. One
    /// party is enough (a one-party job: nothing crosses); none is an
    /// error naming `parties`.
    pub fn new(parties: &[&str]) -> Result<Self, Error> {
        let mut names = Vec::new();
        for p in parties {
            let name: PartyName = p.parse().map_err(|e: xsilo_wire::NameError| {
                Error::Config(ConfigError::Invalid {
                    key: format!("parties.{p}"),
                    reason: e.to_string(),
                })
            })?;
            names.push(name);
        }
        if names.is_empty() {
            return Err(Error::Config(ConfigError::Invalid {
                key: "parties".into(),
                reason: "a simulation needs at least 1 party, none given".into(),
            }));
        }
        Ok(Self {
            job: JobName::new("simulation").map_err(|e| {
                Error::Config(ConfigError::Invalid {
                    key: "job".into(),
                    reason: e.to_string(),
                })
            })?,
            parties: names,
            network: SimNetwork::Memory,
            comm: CommConfig::default(),
            execution: ExecutionConfig::default(),
        })
    }

    /// Uses QUIC on loopback instead of memory.
    pub fn over_quic(mut self) -> Self {
        self.network = SimNetwork::Quic;
        self
    }

    /// Uses these communication settings for every party.
    pub fn with_comm(mut self, comm: CommConfig) -> Self {
        self.comm = comm;
        self
    }

    /// Uses `n` workers in every party (default: one per core).
    pub fn with_workers(mut self, n: usize) -> Self {
        self.execution.workers = Some(n.max(1));
        self
    }

    /// Starts every party, each on a control thread of its own.
    async fn start(&self) -> Result<Vec<Fed>, Error> {
        let config = self.comm.transport_config();
        let options = self.comm.runtime_options(&config, &self.execution);
        let mut launches = Vec::new();
        match self.network {
            SimNetwork::Memory => {
                let net = MemoryNetwork::new();
                for p in &self.parties {
                    let t = net.join(&self.job, p, &self.parties, config.clone())?;
                    launches.push(tokio::task::spawn_local(Runtime::launch(
                        move || async move { Ok::<_, Error>(Arc::new(t) as Arc<dyn Transport>) },
                        options.clone(),
                    )));
                }
            }
            SimNetwork::Quic => {
                let ca = DevCa::new().map_err(|e| {
                    Error::Setup(xsilo_transport::SetupError::AddressBook(e.to_string()))
                })?;
                let any = SocketAddr::from(([127, 0, 0, 1], 0));
                let mut addrs = Vec::new();
                let mut books = Vec::new();
                for p in &self.parties {
                    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
                    let (book_tx, book_rx) =
                        tokio::sync::oneshot::channel::<BTreeMap<PartyName, PeerAddress>>();
                    let identity = ca.identity(p)?;
                    let (party, job, config) = (p.clone(), self.job.clone(), config.clone());
                    let make = move || async move {
                        // On the party's control thread: its endpoint lives there.
                        let endpoint = QuicEndpoint::bind(party, any, &identity, config)?;
                        let _ = addr_tx.send(endpoint.local_addr());
                        let book = book_rx.await.map_err(|_| {
                            Error::Runtime(RuntimeError::ActorGone("the simulation's start"))
                        })?;
                        Ok::<_, Error>(Arc::new(endpoint.join(job, book)?) as Arc<dyn Transport>)
                    };
                    launches.push(tokio::task::spawn_local(Runtime::launch(
                        make,
                        options.clone(),
                    )));
                    addrs.push(addr_rx);
                    books.push(book_tx);
                }
                let mut book = BTreeMap::new();
                let mut failed = false;
                for (p, rx) in self.parties.iter().zip(addrs) {
                    match rx.await {
                        Ok(addr) => {
                            book.insert(p.clone(), PeerAddress::from(addr));
                        }
                        Err(_) => failed = true,
                    }
                }
                if !failed {
                    for tx in books {
                        let _ = tx.send(book.clone());
                    }
                }
            }
        }
        let mut feds = Vec::new();
        for launch in launches {
            let rt = launch.await.map_err(|_| {
                Error::Runtime(RuntimeError::ActorGone("a party's control thread"))
            })??;
            feds.push(Fed::new(rt, None));
        }
        Ok(feds)
    }

    /// Runs `driver` once per party, concurrently, each with its own
    /// [`Fed`]; returns each party's result. Call it from any tokio
    /// runtime (for example inside [`crate::block_on`]); each party's
    /// control plane runs on a thread of its own. A party whose driver
    /// returns without calling `shutdown` is shut down afterwards.
    pub async fn run<F, Fut, T>(
        self,
        driver: F,
    ) -> Result<BTreeMap<PartyName, Result<T, Error>>, Error>
    where
        F: Fn(Fed) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'static,
        T: 'static,
    {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let mut handles = Vec::new();
                for fed in self.start().await? {
                    let party = fed.me().clone();
                    let run = driver(fed.clone());
                    let name = party.clone();
                    handles.push((
                        party,
                        tokio::task::spawn_local(async move {
                            // The driver runs in a task of its own, so that a
                            // panic in it still shuts this party down (its
                            // peers then fail their waits on it instead of
                            // hanging).
                            let result = match tokio::task::spawn_local(run).await {
                                Ok(result) => result,
                                Err(e) => Err(Error::Runtime(RuntimeError::Aborted {
                                    by: name,
                                    reason: if e.is_panic() {
                                        "its driver panicked".into()
                                    } else {
                                        "its driver was cancelled".into()
                                    },
                                })),
                            };
                            let _ = fed.shutdown().await;
                            result
                        }),
                    ));
                }
                let mut results = BTreeMap::new();
                for (party, handle) in handles {
                    let result = handle.await.unwrap_or_else(|_| {
                        Err(Error::Runtime(RuntimeError::Aborted {
                            by: party.clone(),
                            reason: "its simulation task was cancelled".into(),
                        }))
                    });
                    results.insert(party, result);
                }
                Ok(results)
            })
            .await
    }
}
