//! Rebuilds the coordinator when a migration is added: `sqlx::migrate!`
//! embeds the files it saw at compile time, and cargo does not notice a new
//! file in the folder on its own (sqlx's documented remedy).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
