"""Subcommands of the ``streams`` package: producing, checking and describing events."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from infra.cli.args import command, out_path, print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``produce``, ``validate`` and ``schema`` to ``marquee``."""
    p = command(
        sub, "produce", _produce, "send events to the events topic (file or synthetic)",
        "Send interaction events with an idempotent producer (acks=all, keyed by user_id). "
        "Exits 1 if any event was not acknowledged by the broker.",
        examples=("marquee produce --synthetic --limit 100000",
                  "marquee produce --file events.jsonl --format jsonl",
                  "marquee produce --file data.txt --format sasrec --rate 5000"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="events file to send")
    src.add_argument("--synthetic", action="store_true",
                     help="generate events from the synthetic world (deterministic by --seed)")
    p.add_argument("--format", choices=("jsonl", "sasrec"), default="jsonl",
                   help="file format: one JSON event a line, or 'user item' lines (default jsonl)")
    p.add_argument("--limit", type=int, default=None, help="stop after N events")
    p.add_argument("--rate", type=float, default=None, help="at most R events/s")
    p.add_argument("--topic", default=None, help="topic (default: MARQUEE_EVENTS_TOPIC or "
                                                 "marquee.events)")
    p.add_argument("--seed", type=int, default=7, help="synthetic world seed (default 7)")
    p.add_argument("--users", type=int, default=2000, help="synthetic users (default 2000)")
    p.add_argument("--catalogue-out", type=Path, default=None,
                   help="also write the synthetic catalogue (JSON lines) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = command(sub, "validate", _validate, "check a JSON-lines events file against the contract",
                "Print every problem of every bad line (field, what is wrong, the fix). Exits 1 "
                "if any line is invalid.")
    p.add_argument("file", type=Path, help="events file, one JSON object a line")

    p = command(sub, "schema", _schema, "print the event contract as JSON Schema",
                "Print the contract, or with --write regenerate the files in infra/schemas/ (the "
                "contract and Tansu's per-topic schema).")
    p.add_argument("--write", type=Path, default=None, metavar="DIR",
                   help="write the schema files into DIR instead of printing")
    _register_flow(sub)


FLOW_HELP = """\
Run the streaming tokenizer: a Bytewax dataflow that reads the events topic, checks each event
against the contract, its message key (= user_id) and its Kafka timestamp (at most
MARQUEE_FLOW_MAX_FUTURE_MS ahead; bad ones go to the dead-letter topic with their reason), drops
duplicate event ids, places out-of-order events (up to MARQUEE_FLOW_MAX_LATENESS_MS late),
merges each user's events into tokens, and writes
  - user_tokens (each user's newest <= 200 tokens) and item_stats to the Feast online store
    (SQLite under DATA_DIR/feast, or Redis with --online redis / MARQUEE_ONLINE_STORE=redis),
  - final tokens to the parquet token log DATA_DIR/tokens/ (what training reads),
  - the vocabulary to DATA_DIR/vocab.json and vocab.json.journal (seeded from
    DATA_DIR/catalogue.jsonl if present),
  - experiment outcomes: when MARQUEE_RANKINGS_TOPIC exists, events that carry a request_id
    are joined to the logged ranking (within MARQUEE_FLOW_JOIN_WINDOW_MS) and counted per
    experiment and variant in DATA_DIR/experiments.sqlite3 (marquee experiment report).
It snapshots its state in --recovery-dir (DATA_DIR/recovery by default) every
--snapshot-interval seconds and resumes from the last snapshot after a crash or a restart
(at-least-once; every write is idempotent); --no-recovery reads the topic from its start.
Metrics (Prometheus) on --metrics-port: marquee_events_*_total, marquee_tokens_emitted_total,
marquee_token_merge_ratio, marquee_feast_write_seconds, marquee_event_freshness_seconds,
marquee_consumer_lag_messages, marquee_vocab_overflow_total, marquee_experiment_*.
"""


def _register_flow(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "flow", _flow, "run the streaming tokenizer (Kafka -> tokens -> Feast + token log)",
        FLOW_HELP, examples=("marquee flow --metrics-port 9108",
                             "marquee flow --no-tail --finish-at-eof  # replay, then stop",
                             "marquee flow --processes 2 --recovery-dir var/recovery",
                             "marquee flow --process-id 1 --addresses flow-0.flow:2101,"
                             "flow-1.flow:2101  # one member per host"))
    p.add_argument("--data-dir", type=Path, default=None,
                   help="default var (MARQUEE_FLOW_DATA_DIR)")
    p.add_argument("--online", choices=("sqlite", "redis"), default=None,
                   help="online store (default MARQUEE_ONLINE_STORE or sqlite)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--workers", type=int, default=1, help="worker threads per process")
    p.add_argument("--process-id", type=int, default=None,
                   help="run only this member of a cluster whose members start on their own "
                   "hosts (needs --addresses; --processes is their count)")
    p.add_argument("--addresses", default=None, metavar="HOST:PORT,...",
                   help="every member's Bytewax address, in process-id order")
    p.add_argument("--recovery-dir", type=Path, default=None,
                   help="snapshot state here and resume from it (created if missing; "
                   "default DATA_DIR/recovery)")
    p.add_argument("--no-recovery", action="store_true",
                   help="no snapshots: every start reads the topic from its beginning")
    p.add_argument("--snapshot-interval", type=int, default=10, help="seconds (default 10)")
    p.add_argument("--no-tail", action="store_true", help="stop at the end of the topic")
    p.add_argument("--finish-at-eof", action="store_true",
                   help="at the end of input close every open token (replays)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")


def _flow(args: argparse.Namespace) -> int:
    import os

    from streams.flow import FlowSettings
    from streams.launch import Launch, Member, parse_addresses, run, start_member, wait

    env = dict(os.environ)
    if args.data_dir:
        env["MARQUEE_FLOW_DATA_DIR"] = str(args.data_dir)
    recovery = None if args.no_recovery else (
        args.recovery_dir or (args.data_dir or FlowSettings().data_dir) / "recovery")
    if args.online:
        env["MARQUEE_ONLINE_STORE"] = args.online
    if args.no_tail:
        env["MARQUEE_FLOW_TAIL"] = "false"
    if args.finish_at_eof:
        env["MARQUEE_FLOW_FINISH_AT_EOF"] = "true"
    if (args.process_id is None) != (args.addresses is None):
        raise ValueError("--process-id and --addresses go together (one member of a cluster)")
    if args.process_id is None:
        return run(Launch(processes=args.processes, workers=args.workers,
                          recovery_dir=recovery, snapshot_s=args.snapshot_interval,
                          metrics_port=args.metrics_port), env)
    member = Member(args.process_id, tuple(parse_addresses(args.addresses)))
    launch = Launch(processes=len(member.addresses), workers=args.workers,
                    recovery_dir=recovery, snapshot_s=args.snapshot_interval,
                    metrics_port=args.metrics_port)
    return wait([start_member(launch, member, env)])


BENCH_STREAM_HELP = """\
Measure the tokenizer flow (one worker) into Feast beside do-nothing Bytewax flows that read the
same topic (the floors), in the same run, each flow in a process of its own:
  - events/s and CPU microseconds per event: Bytewax's KafkaSource floor, the flow's batch-source
    floor, the full flow;
  - resident memory of the flow process when the input ended, each user's pickled state (what
    Bytewax snapshots), and the growth per 100,000 more users (a second run over the first half
    of the users, same events per user);
  - with --processes N > 1, the flow as N Bytewax processes over the topic's partitions: aggregate
    events/s and the ratio to one process;
  - freshness (produced -> readable online) p50/p99 with events produced at --fresh-rate, beside
    the same produce read by a do-nothing flow; a flow that falls behind is reported as over
    capacity instead of with a p99.
Each phase also says how busy the machine and the broker were. One line per phase goes to
stderr. A default run takes about 10-15 minutes on 2 cores (generating the 1,000,000 events
alone takes about 45 s of CPU).
"""


def _register_bench_stream(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench stream``."""
    p = command(
        bench_sub, "stream", _bench_stream,
        "flow throughput, CPU, memory, scale-out and freshness vs do-nothing Bytewax flows",
        BENCH_STREAM_HELP,
        examples=("marquee bench stream",
                  "marquee bench stream --online redis",
                  "marquee bench stream --events 200000 --users 20000 --processes 1"))
    p.add_argument("--events", type=int, default=1_000_000, help="synthetic events to replay")
    p.add_argument("--users", type=int, default=100_000,
                   help="synthetic users (each with their first events/users events)")
    p.add_argument("--online", choices=("sqlite", "redis"), default="sqlite",
                   help="online store")
    p.add_argument("--processes", type=int, default=2,
                   help="also run the flow as this many processes and report the ratio to "
                   "one (1: skip; at most the topic's partitions, MARQUEE_EVENTS_PARTITIONS)")
    p.add_argument("--batch-size", type=int, default=5000, help="Kafka messages per poll")
    p.add_argument("--flush-s", type=float, default=0.1, help="online write grid, seconds")
    p.add_argument("--fresh-rate", type=float, default=20_000.0,
                   help="events/s produced during the freshness phase")
    p.add_argument("--fresh-seconds", type=float, default=8.0,
                   help="length of the freshness phase, seconds")
    out_path(p, Path("var/bench/stream.json"), "JSON report")


def _bench_stream(args: argparse.Namespace) -> int:
    from infra.bench.stream import run_bench
    from infra.bench.stream_report import table

    r = run_bench(args.events, args.online, args.batch_size, args.flush_s, args.fresh_rate,
                  args.fresh_seconds, out=args.out, users=args.users, processes=args.processes)
    print("\n".join(table(r)))
    print(f"wrote {args.out}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    """Add ``marquee bench produce``."""
    p = command(bench, "produce", _bench_produce, "producer events/s vs the raw librdkafka floor",
                "Produce N synthetic events three ways (raw librdkafka loop, produce_events on "
                "pre-serialized events, the end-to-end synthetic producer) to the embedded broker "
                "(or KAFKA_BOOTSTRAP_SERVERS) and print events/s and ratios.")
    p.add_argument("--events", type=int, default=200_000, help="synthetic events to send")
    _register_bench_stream(bench)
    _register_bench_tokenizer(bench)
    _register_bench_snapshots(bench)
    _register_bench_online_store(bench)
    _register_bench_vocab(bench)
    _register_bench_quarantine(bench)
    _register_bench_outcomes(bench)


def _register_bench_outcomes(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench outcomes``."""
    p = command(
        bench_sub, "outcomes", _bench_outcomes,
        "the experiment join's cost: CPU per event with it off, on, and on every event",
        "Replay one synthetic stream through the flow's step logic (no Bytewax) with the "
        "experiment join off, on with events that carry no request_id, and on with every event "
        "joined to a logged A/B ranking; print CPU microseconds per event of each (best and "
        "mean of --repeats runs, in rotating order), the CPU per ranking read and held, and "
        "the memory and snapshot bytes of a held ranking.",
        examples=("marquee bench outcomes", "marquee bench outcomes --events 200000 --repeats 5"))
    p.add_argument("--events", type=int, default=100_000, help="synthetic events")
    p.add_argument("--users", type=int, default=4_000, help="synthetic users")
    p.add_argument("--poll", type=int, default=1000, help="messages per poll")
    p.add_argument("--repeats", type=int, default=5, help="runs of each mode")
    out_path(p, Path("var/bench/outcomes.json"), "JSON report")


def _bench_outcomes(args: argparse.Namespace) -> int:
    from infra.bench.outcomes import lines, run_bench
    from streams import compiled

    report = run_bench(args.events, args.users, args.poll, repeats=args.repeats, out=args.out)
    print("\n".join(lines(report)))
    print(f"hot modules: {compiled.describe()}; wrote {args.out}")
    return 0


def _register_bench_snapshots(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench snapshots``."""
    p = command(
        bench_sub, "snapshots", _bench_snapshots,
        "what a recovery snapshot of the user shards costs, with and without the state store",
        "Fill the flow's user shards with a generated stream's users, touch a share of them "
        "and snapshot every shard, as an epoch does: once with every user's pickle in the "
        "snapshot (pickled again and written to SQLite as Bytewax writes its partitions), "
        "once with the versioned state store `marquee flow` uses with a recovery directory. "
        "Prints seconds and bytes handed to Bytewax per snapshot.",
        examples=("marquee bench snapshots", "marquee bench snapshots --users 100000"))
    p.add_argument("--users", type=int, default=20_000, help="synthetic users")
    p.add_argument("--events-per-user", type=int, default=10, help="each user's first events")
    p.add_argument("--shards", type=int, default=16, help="user shards")
    p.add_argument("--touched", type=float, default=0.1,
                   help="share of the users an epoch changes")


def _bench_snapshots(args: argparse.Namespace) -> int:
    from infra.bench.snapshots import SnapshotSpec, run_bench

    spec = SnapshotSpec(users=args.users, events_per_user=args.events_per_user,
                        shards=args.shards, touched=args.touched)
    print(f"{spec.users:,} users x {spec.events_per_user} events in {spec.shards} shards; "
          f"snapshot after every user is new, then after {spec.touched:.0%} of them changed")
    for r in run_bench(spec):
        name = "state store    " if r["store"] else "every user    "
        print(f"{name} first {r['first_s']:6.3f} s {r['first_bytes'] / 1e6:7.1f} MB   "
              f"touched {r['touched_s']:6.3f} s {r['touched_bytes'] / 1e6:7.2f} MB  to Bytewax; "
              f"{r['resident_users']:,} of {r['users']:,} users in memory")
    return 0


def _register_bench_online_store(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench redis``."""
    p = command(
        bench_sub, "redis", _bench_online_store,
        "what one Redis gives the online store: user rows written and read per second, bytes "
        "per row",
        "Start a redis-server, write --users user rows (--tokens tokens each, the flow's row "
        "layout) through Feast in batches of --batch, then read --reads of them one user at a "
        "time, as a ranking does. Beside each, the floor: the same hashes written and read "
        "with plain redis-py pipelines (no Feast) from the same client. Prints rows/s, CPU "
        "per row, Redis memory per row and read p50/p99; `marquee capacity` uses these "
        "figures.",
        examples=("marquee bench redis", "marquee bench redis --users 100000 --tokens 50",
                  "marquee bench redis --persist  # append-only file, fsync always"))
    p.add_argument("--users", type=int, default=20_000, help="user rows written")
    p.add_argument("--tokens", type=int, default=200,
                   help="tokens per row (200 = the most a row holds)")
    p.add_argument("--batch", type=int, default=500, help="rows per write")
    p.add_argument("--reads", type=int, default=10_000, help="single-user reads timed")
    p.add_argument("--persist", action="store_true",
                   help="Redis with its append-only file, fsync always")
    out_path(p, Path("var/bench/redis.json"), "JSON report")


def _bench_online_store(args: argparse.Namespace) -> int:
    from infra.bench.online_store import OnlineStoreSpec, run_bench

    spec = OnlineStoreSpec(users=args.users, tokens=args.tokens, batch=args.batch,
                           reads=args.reads, persist=args.persist)
    r = run_bench(spec, args.out)
    print(f"Redis {r['redis_version']}{' (append-only, fsync always)' if spec.persist else ''}: "
          f"{spec.users:,} user rows of {spec.tokens} tokens in writes of {spec.batch}, "
          f"{spec.reads:,} single-user reads")
    for name, f in (("Feast rows   ", r["feast"]), ("floor (redis-py)", r["floor"])):
        print(f"{name:16} write {f['rows_per_s']:9,.0f} rows/s {f['write_cpu_us_per_row']:6.1f} "
              f"CPU us/row {f['bytes_per_row']:7,.0f} B/row   read {f['reads_per_s']:7,.0f}/s "
              f"p50 {f['read_p50_ms']:.2f} p99 {f['read_p99_ms']:.2f} ms "
              f"{f['read_cpu_us']:6.1f} CPU us; redis-server "
              f"{f['server_us_per_row']:.1f} CPU us/row written, "
              f"{f['server_us_per_read']:.1f} per read")
    return 0


def _register_bench_tokenizer(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench tokenizer``."""
    p = command(
        bench_sub, "tokenizer", _bench_tokenizer,
        "the compiled hot modules vs their pure-Python reference: same output, CPU per event",
        "Replay one generated stream (merges, duplicates, reordered, late, future and invalid "
        "events; snapshots restored every few polls) through the flow's tokenizer steps "
        "twice, in a process running the compiled modules and in one with "
        "MARQUEE_PURE_PYTHON=1. Checks that every poll's user rows, tokens, item rows and dead "
        "letters are byte for byte the same, and prints the CPU per event of each. Exits 1 "
        "if they differ or if the compiled modules are not built.",
        examples=("marquee bench tokenizer",
                  "marquee bench tokenizer --events 1000000 --users 100000 --poll 5000"))
    p.add_argument("--events", type=int, default=200_000, help="synthetic events")
    p.add_argument("--users", type=int, default=20_000, help="synthetic users")
    p.add_argument("--seed", type=int, default=7, help="world and noise seed")
    p.add_argument("--poll", type=int, default=5000, help="messages per poll")
    p.add_argument("--snapshot-every", type=int, default=20,
                   help="polls between a snapshot and a restore from it")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each path, in ABBA order; the mean CPU of each is reported")
    out_path(p, Path("var/bench/tokenizer.json"), "JSON report")


def _bench_tokenizer(args: argparse.Namespace) -> int:
    from infra.bench.tokenizer import StreamSpec, run_bench

    spec = StreamSpec(events=args.events, users=args.users, seed=args.seed, poll=args.poll,
                      snapshot_every=args.snapshot_every)
    try:
        r = run_bench(spec, args.repeats, out=args.out)
    except RuntimeError as exc:  # not built: nothing to compare, say how to build
        print(f"marquee bench tokenizer: {exc}", file=sys.stderr)
        return 1
    counts = r["counts"]
    dead = ", ".join(f"{k[5:]} {v:,}" for k, v in sorted(counts.items()) if k.startswith("dead:"))
    print(f"stream: {r['messages']:,} messages, {args.users:,} users, {r['polls']} polls, "
          f"{r['restores']} snapshot restores; {counts.get('tokens', 0):,} tokens "
          f"({counts.get('merged_tokens', 0):,} merged), {counts.get('rows', 0):,} user rows; "
          f"dead letters: {dead}")
    print(f"pure Python: {r['pure_cpu_us_per_event']:6.1f} CPU us/event  ({r['paths']['pure']})")
    print(f"compiled:    {r['compiled_cpu_us_per_event']:6.1f} CPU us/event  "
          f"({r['paths']['compiled']}); {r['speedup']:.2f}x (best runs: "
          f"{r['speedup_best_runs']:.2f}x; means of {r['repeats']} runs each)")
    if r["identical"]:
        print("outputs: identical, byte for byte, at every poll "
              f"(stream {r['stream_sha256'][:12]})")
    else:
        print(f"outputs DIFFER from poll {r['first_difference']} on", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0 if r["identical"] else 1


def _register_bench_vocab(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench vocab``."""
    p = command(bench_sub, "vocab", _bench_vocab,
                "cost of numbering many new item ids through the shared vocabulary",
                "Number N distinct new item ids in poll-sized rounds through SharedVocab and "
                "print the time per locked round, memory growth, file sizes and load times.")
    p.add_argument("--items", type=int, default=1_000_000, help="distinct new item ids")
    p.add_argument("--batch", type=int, default=5000, help="new ids per round (one poll)")
    out_path(p, Path("var/bench/vocab.json"), "JSON report")


def _bench_vocab(args: argparse.Namespace) -> int:
    from infra.bench.vocab import run_bench

    r = run_bench(args.items, args.batch, out=args.out)
    for key, value in r.items():
        print(f"{key:28s} {value:,.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    print(f"wrote {args.out}")
    return 0


def _register_bench_quarantine(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench quarantine``."""
    p = command(
        bench_sub, "quarantine", _bench_quarantine,
        "the flow's CPU with and without quarantine, and per suspect message",
        "Run the flow in process over synthetic Kafka polls (no broker, sinks that drop "
        "everything): unguarded, guarded with nothing to watch, and guarded with each "
        "partition's first poll suspect (read one message at a time); best of --repeats.")
    p.add_argument("--events", type=int, default=100_000, help="synthetic events")
    p.add_argument("--batch-size", type=int, default=5000, help="Kafka messages per poll")
    p.add_argument("--repeats", type=int, default=3, help="runs of each arm")
    out_path(p, Path("var/bench/quarantine.json"), "JSON report")


def _bench_quarantine(args: argparse.Namespace) -> int:
    from infra.bench.quarantine import run_bench

    r = run_bench(args.events, args.batch_size, repeats=args.repeats, out=args.out)
    print(f"events: {r['events']:,} in {r['polls']} polls of <= {r['batch_size']}, "
          f"{r['partitions']} partitions, 1 worker, best of {r['repeats']}")
    print(f"flow CPU unguarded: {r['unguarded_cpu_s']:.3f} s; guarded: {r['guarded_cpu_s']:.3f} s"
          f" ({r['flow_difference']:+.1%}: run-to-run noise included)")
    print(f"the guards' own time: {r['guard_us_per_poll']:.0f} us per poll, "
          f"{r['guard_share']:.2%} of the unguarded flow")
    print(f"slot writes per poll: {r['slot_writes_per_poll']:.1f}, "
          f"{r['slot_write_us']:.1f} us each")
    print(f"suspects read one at a time: {r['suspect_us_per_message']:.0f} us more per message "
          f"({r['suspect_messages']:,} messages)")
    print(f"wrote {args.out}")
    return 0


def _bench_produce(args: argparse.Namespace) -> int:
    from infra.bench.produce import run_bench

    figures = run_bench(getattr(args, "events", 200_000))
    return 0 if figures["read_back"] == figures["events"] else 1


def _produce(args: argparse.Namespace) -> int:
    from streams.config import KafkaSettings
    from streams.contract.files import read_jsonl, read_sasrec
    from streams.produce import produce_events

    settings = KafkaSettings()
    if args.synthetic:
        from infra.synthetic import SyntheticWorld, WorldConfig

        world = SyntheticWorld(WorldConfig(seed=args.seed, n_users=args.users))
        if args.catalogue_out:
            world.write_catalogue(args.catalogue_out)
        events = world.events(args.limit)
    else:
        if not args.file.exists():
            raise FileNotFoundError(f"{args.file} does not exist")
        events = read_jsonl(args.file) if args.format == "jsonl" else read_sasrec(args.file)
        if args.limit is not None:
            events = itertools.islice(events, args.limit)
    topic = args.topic or settings.events_topic
    print(f"producing to {topic} on {settings.bootstrap_servers}", file=sys.stderr)
    report = produce_events(events, settings, topic=topic, rate=args.rate, total=args.limit,
                            progress=not args.no_progress)
    print(report.summary())
    return 0 if report.attempted and not report.undelivered else 1


def _validate(args: argparse.Namespace) -> int:
    from streams.contract.events import validate_event
    from streams.contract.files import read_jsonl

    bad = total = 0
    for lineno, line in enumerate(read_jsonl(args.file), start=1):
        total += 1
        _, problems = validate_event(line)
        if problems:
            bad += 1
            for problem in problems:
                print(f"{args.file}:{lineno}: {problem}")
    print(f"{total - bad:,} valid, {bad:,} invalid of {total:,} events")
    return 1 if bad else 0


def _schema(args: argparse.Namespace) -> int:
    from streams.contract.events import json_schema, write_schema_files

    if args.write:
        for path in write_schema_files(args.write):
            print(f"wrote {path}")
    else:
        return print_json(json_schema())
    return 0
