//! The reloader's watch: file events (`notify`, non-recursive, so that an editor's
//! save-by-rename is seen) gathered until the files have been quiet for the debounce, and
//! SIGHUP, which forces a reload of everything. Each reload runs on a blocking thread, off
//! the tick's path.
//!
//! The watch never reads a policy or compiles a plugin itself; `Reloader::reload` does.

use super::{DEFAULT_DEBOUNCE, Reloader};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::sync::mpsc;

impl Reloader {
    /// Watches the files and reloads on change (debounced) and on SIGHUP (forced), until the
    /// engine's end of the channel is dropped. Runs on the current tokio runtime.
    pub fn spawn(self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
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
            let mut pending = BTreeSet::new();
            // The debounce runs from the last relevant event, whatever else the folder sees.
            let mut quiet_at = tokio::time::Instant::now();
            loop {
                let force = tokio::select! {
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
                    _ = tokio::time::sleep_until(quiet_at), if !pending.is_empty() => false,
                    _ = hangup.recv() => { tracing::info!("SIGHUP: reloading every policy and plugin"); true }
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
                let changed = std::mem::take(&mut pending);
                let done = tokio::task::spawn_blocking(move || {
                    current.reload(&changed, force);
                    current
                })
                .await;
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

