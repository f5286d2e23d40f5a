"""``hftpf-agent replay``: argument handling, the --json document, guessing, errors and the Rich report."""
from __future__ import annotations

import argparse
import json

import pytest

from hft_packetfilter import replay
from test_pipeline import (FIX_CONFIG, ITCH_CONFIG, T0, US, fix_session, itch_feed, write_pcap)


def run(argv, capsys):
    p = argparse.ArgumentParser(prog="hftpf-agent")
    sub = p.add_subparsers()
    replay.add_parser(sub)
    args = p.parse_args(argv)
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_document_keys(tmp_path, capsys):
    pcap = write_pcap(tmp_path / "fix.pcap", fix_session())
    cfg = tmp_path / "fix.yaml"
    cfg.write_text(FIX_CONFIG)
    rc, out, err = run(["replay", str(pcap), "-c", str(cfg), "--json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    for key in ("packets", "messages", "decode_errors", "feeds", "orders", "latency", "books", "crossvenue",
                "execution", "capture", "tcp", "errors", "unclassified"):
        assert key in doc, key
    assert "guessed" not in doc
    assert doc["messages"]["FIX/TCP"]["D"] == 10
    o = doc["orders"]["FIXV"]
    assert {k: o[k] for k in ("orders", "acks", "fills", "cancels", "rejects")} == \
        {"orders": 10, "acks": 9, "fills": 1, "cancels": 1, "rejects": 1}
    assert {k: doc["latency"]["FIXV"]["order_ack_us"][k] for k in ("p50", "p99", "max")} == \
        {"p50": 500.0, "p99": 1000.0, "max": 1000.0}
    cap = doc["capture"]
    assert cap["format"] == "pcap" and cap["resolution"] == "ns" and cap["truncated"] is False
    assert cap["first_ts_ns"] == T0 and cap["records"] == doc["packets"]


def test_guessing_is_reported(tmp_path, capsys):
    pcap = write_pcap(tmp_path / "itch.pcap", itch_feed())
    rc, out, err = run(["replay", str(pcap), "-j"], capsys)
    assert rc == 0
    assert "guessed ITCH/MoldUDP64 on port 26477" in err
    doc = json.loads(out)
    g = doc["guessed"]
    assert g["exchanges"][0]["protocol"] == "ITCH/MoldUDP64" and g["packets_examined"] == 9
    (stream,) = doc["feeds"]
    f = doc["feeds"][stream]
    assert {k: f[k] for k in ("messages", "gaps", "missing", "duplicates", "out_of_order")} == \
        {"messages": 9, "gaps": 2, "missing": 3, "duplicates": 1, "out_of_order": 1}


def test_window_relative_and_absolute(tmp_path, capsys):
    pcap = write_pcap(tmp_path / "itch.pcap", itch_feed())
    cfg = tmp_path / "itch.yaml"
    cfg.write_text(ITCH_CONFIG)
    rc, out, _ = run(["replay", str(pcap), "-c", str(cfg), "-j", "--from", "+200us", "--to", "+0.0005"], capsys)
    assert rc == 0
    doc = json.loads(out)
    assert (doc["packets"], doc["outside_window"]) == (3, 7)
    assert doc["capture"]["window"] == {"from_ns": T0 + 200 * US, "to_ns": T0 + 500 * US}
    rc, out, _ = run(["replay", str(pcap), "-c", str(cfg), "-j", "--from", "2023-11-14T22:13:20.0002Z"], capsys)
    assert rc == 0 and json.loads(out)["outside_window"] == 2


def test_parse_time_forms():
    first = T0 + 123
    assert replay.parse_time("+1.5s", first) == first + 1_500_000_000
    assert replay.parse_time("+250ms", first) == first + 250_000_000
    assert replay.parse_time("+2m", first) == first + 120 * 10**9
    assert replay.parse_time("1700000000.25", None) == T0 + 250_000_000
    assert replay.parse_time("2023-11-14T22:13:20.000000001Z", None) == T0 + 1
    assert replay.parse_time("2023-11-14T23:13:20+01:00", None) == T0
    assert replay.parse_time("22:13:21", first) == T0 + 10**9
    with pytest.raises(replay.TimeError):
        replay.parse_time("yesterday", first)


@pytest.mark.parametrize("content,why", [(None, "no such file"), (b"", "the file is empty"),
                                         (b"hello, this is text\n", "not a capture file")])
def test_missing_or_not_a_capture(tmp_path, capsys, content, why):
    path = tmp_path / "x.pcap"
    if content is not None:
        path.write_bytes(content)
    rc, out, err = run(["replay", str(path)], capsys)
    assert rc == 1 and out == "" and why in err


def test_bad_config_and_schema_are_clear_errors(tmp_path, capsys):
    pcap = write_pcap(tmp_path / "itch.pcap", itch_feed())
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  - name: X\n    host: 10.0.0.1\n    ports: [70000]\n    protocol: FIX\n")
    rc, _, err = run(["replay", str(pcap), "-c", str(bad)], capsys)
    assert rc == 1 and "bad.yaml:4" in err
    rc, _, err = run(["replay", str(pcap), "--mdp3-schema", str(tmp_path / "none.xml")], capsys)
    assert rc == 1 and "--mdp3-schema" in err
    rc, _, err = run(["replay", str(pcap), "--from", "+1s", "--to", "+0s"], capsys)
    assert rc == 1 and "--to must be after --from" in err


def test_truncated_capture_is_reported(tmp_path, capsys):
    pcap = write_pcap(tmp_path / "itch.pcap", itch_feed())
    data = pcap.read_bytes()
    pcap.write_bytes(data[:-20])
    rc, out, err = run(["replay", str(pcap), "-j"], capsys)
    assert rc == 0 and "cut short" in err
    doc = json.loads(out)
    assert doc["capture"]["truncated"] is True and doc["packets"] == 9


def test_human_report_renders(tmp_path):
    from rich.console import Console

    from hft_packetfilter import config
    from hft_packetfilter.pipeline import run_capture

    doc = run_capture(write_pcap(tmp_path / "fix.pcap", fix_session()), config.loads(FIX_CONFIG))
    doc2 = run_capture(write_pcap(tmp_path / "itch.pcap", itch_feed()), config.loads(ITCH_CONFIG))
    con = Console(record=True, width=140)
    replay.render(doc, con)
    replay.render(doc2, con)
    text = con.export_text()
    assert "orders (latency in us)" in text and "FIXV" in text and "500.0" in text
    assert "feed quality" in text and "NSDQ" in text and "book NSDQ" in text and "AAPL" in text


def test_help_has_examples(capsys):
    p = argparse.ArgumentParser(prog="hftpf-agent")
    sub = p.add_subparsers()
    replay.add_parser(sub)
    with pytest.raises(SystemExit):
        p.parse_args(["replay", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--mdp3-schema" in out and "--from TIME" in out
