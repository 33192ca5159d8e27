//! The reloader's watch: file events (`notify`, non-recursive, so that an editor's
//! save-by-rename is seen) gathered until the files have been quiet for the debounce, and
//! SIGHUP, which forces a reload of everything. Each reload runs on a blocking thread, off
//! the tick's path.
//!
//! The watch never reads a policy or compiles a plugin itself; `Reloader::reload` does.

use super::{Considered, DEFAULT_DEBOUNCE, Reloader};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// A policy that does not live in a file (an AugurPolicy resource) changed.
#[derive(Debug)]
pub enum DocumentChange {
    /// Its new version: `source` names it (a path in the folder its relative paths resolve
    /// against), `text` is the policy document; the reply says what became of it.
    Apply { source: PathBuf, text: String, reply: oneshot::Sender<Considered> },
    /// It is gone: its policy stops; the reply says whether one ran.
    Delete { source: PathBuf, why: String, reply: oneshot::Sender<bool> },
}

/// What one pass of the loop has to do.
enum Work {
    Files { force: bool },
    Document(DocumentChange),
}

impl Reloader {
    /// Watches the files and reloads on change (debounced) and on SIGHUP (forced), until the
    /// engine's end of the channel is dropped. Runs on the current tokio runtime.
    pub fn spawn(self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        self.spawn_with(None)
    }

    /// [`Reloader::spawn`], also taking policies that do not live in files from `documents`.
    pub fn spawn_with(self, documents: Option<mpsc::UnboundedReceiver<DocumentChange>>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let (events_tx, mut events) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Opening or reading a file is no change (and the reloader's own reads would loop).
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            Ok(event) => event.paths.into_iter().for_each(|p| {
                let _ = events_tx.send(p);
            }),
            Err(e) => tracing::warn!("file watch: {e}"),
        })?;
        let mut watched = BTreeSet::new();
        watch_folders(&mut watcher, &mut watched, self.folders());
        let debounce = self.options.debounce.unwrap_or(DEFAULT_DEBOUNCE);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(tokio::spawn(async move {
            let mut reloader = Some(self);
            let mut documents = documents;
            let mut pending = BTreeSet::new();
            // The debounce runs from the last relevant event, whatever else the folder sees.
            let mut quiet_at = tokio::time::Instant::now();
            loop {
                let work = tokio::select! {
                    change = async { documents.as_mut().expect("guarded").recv().await }, if documents.is_some() => match change {
                        Some(change) => Work::Document(change),
                        None => { documents = None; continue; }
                    },
                    event = events.recv() => match event {
                        Some(path) => {
                            if reloader.as_ref().is_some_and(|r| r.is_relevant(&path)) {
                                pending.insert(path);
                                quiet_at = tokio::time::Instant::now() + debounce;
                            }
                            continue;
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(quiet_at), if !pending.is_empty() => Work::Files { force: false },
                    _ = hangup.recv() => { tracing::info!("SIGHUP: reloading every policy and plugin"); Work::Files { force: true } }
                };
                // Quiet for the debounce (or forced): take what gathered, also anything that
                // arrived meanwhile.
                let mut current = reloader.take().expect("the reloader is back after each reload");
                while let Ok(path) = events.try_recv() {
                    if current.is_relevant(&path) {
                        pending.insert(path);
                    }
                }
                if current.updates.is_closed() {
                    break;
                }
                let done = match work {
                    Work::Files { force } => {
                        let changed = std::mem::take(&mut pending);
                        tokio::task::spawn_blocking(move || {
                            current.reload(&changed, force);
                            current
                        })
                        .await
                    }
                    Work::Document(change) => {
                        tokio::task::spawn_blocking(move || {
                            match change {
                                // A caller that stopped waiting has nothing to hear.
                                DocumentChange::Apply { source, text, reply } => drop(reply.send(current.apply_document(&source, &text))),
                                DocumentChange::Delete { source, why, reply } => drop(reply.send(current.remove_document(&source, &why))),
                            }
                            current
                        })
                        .await
                    }
                };
                match done {
                    Ok(current) => {
                        watch_folders(&mut watcher, &mut watched, current.folders());
                        reloader = Some(current);
                    }
                    Err(e) => {
                        tracing::error!("the reloader failed ({e}); live reload stops, the running versions stay");
                        break;
                    }
                }
            }
        }))
    }
}

fn watch_folders(watcher: &mut notify::RecommendedWatcher, watched: &mut BTreeSet<PathBuf>, folders: BTreeSet<PathBuf>) {
    for folder in folders {
        if watched.contains(&folder) {
            continue;
        }
        match watcher.watch(&folder, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(folder);
            }
            Err(e) => tracing::warn!("cannot watch {} for changes: {e}", folder.display()),
        }
    }
}

