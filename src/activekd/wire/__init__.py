"""The wire side of activekd: proto <-> numpy/dict conversions and the gRPC clients.

``activekd.v1`` holds the generated protobuf/gRPC code; this package holds everything else that
knows about it on either side of a channel: :mod:`~activekd.wire.tensors` (numpy <-> ``Tensor``),
:mod:`~activekd.wire.pool_info` (pool metadata -> ``PoolInfo``), :mod:`~activekd.wire.structs`
(``Struct`` <-> dict) and the clients, one module per service (:mod:`activekd.client` re-exports
them). Core packages (selection, student, teacher, state, store, data, experiment) never import it.
"""
