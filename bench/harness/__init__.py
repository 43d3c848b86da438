"""The benchmark harness behind bench/run.py.

One broker, one input topic, every variant reading it with a group of its own:

    data      generates the synthetic transactions in chunks, produces them, and keeps per record
              what the checks need (value CRC, the model's score computed here with onnxruntime)
    procs     starts the processes under test (runtime, Python pipelines) from a snapshot of the
              build outputs, waits until their group has committed the end of the input while
              sampling their memory, and stops them
    verify    reads an output topic back and checks it: count, distinct ids, content, committed
              offsets; throughput from the first to the last output record's timestamp
    variants  B1 (pass-through ceiling), B2 (fraud pipeline), B4 (model server, per record and
              batched), B5 (Python and Quix Streams), B7 (memory on a backlog)
    latency   B6: records offered at a fixed rate, latency from input to output timestamps
    external  B3 (the plugin-bench binary) and B4's ideal gRPC client, as subprocesses
    report    machine facts, the table, the targets, BENCHMARKS.md
    result    what a variant returns
"""
