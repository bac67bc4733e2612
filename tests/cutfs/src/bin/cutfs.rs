//! The `cutfs` process: mounts a filesystem that forgets whatever was not synced and obeys
//! commands from the test that started it (see `annals_cutfs::CutFs`).

fn main() -> anyhow::Result<()> {
    annals_cutfs::daemon_main()
}
