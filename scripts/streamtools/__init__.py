"""Helpers shared by the end-to-end tests, the demo and the command-line tools.

    paths     where things are in the repository (binaries, model, config)
    services  start and stop the processes: tansu broker, model server, runtime
    kafka     create topics, produce, read topics, committed offsets (confluent-kafka)
    fraud     the fraud example's records (synthetic transactions, poison records) and offline
              scores from the SavedModel
    credit    the credit example's records (the UCI German credit data, bad records) and offline
              scores from the SavedModel

None of this uses the runtime's own code: it is an independent client of the same systems.
"""
