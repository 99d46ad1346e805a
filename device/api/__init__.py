"""The device's HTTP API, one router per concern; device/app.py puts them together in ``create_app``.

classify.py   POST /classify          one image
batch.py      POST /classify/batch    several images, one frame
probes.py     GET /healthz, /readyz, /metrics
deps.py       what the routes depend on: the pipeline, the metrics, the request's deadline and options
errors.py     the error body, and the edge's address withheld from every detail
"""
