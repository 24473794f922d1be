//! Prints the Redis store's script as Redis runs it (its protocol tables filled in), with its function
//! named by the first argument (default `quotad_bench`): for `scripts/bench-redis-instructions.sh`.

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quotad_bench".to_owned());
    print!("{}", quotad_server::engine::redis::script(&name));
}
