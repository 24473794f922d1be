//! Prints the Redis store's script as Redis runs it (its protocol tables filled in), with its function
//! named by the first argument (default `quotad_bench`), in the layout the second names (`readable`, the
//! default, or `compact`): for `scripts/bench-redis-instructions.sh`.

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quotad_bench".to_owned());
    let layout = match std::env::args().nth(2).as_deref() {
        Some("compact") => quotad_server::engine::RedisLayout::Compact,
        _ => quotad_server::engine::RedisLayout::Readable,
    };
    print!("{}", quotad_server::engine::redis::script(&name, layout));
}
