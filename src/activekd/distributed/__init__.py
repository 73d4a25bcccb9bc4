"""Scale-out on Ray (optional extra ``ray``): the k-center engine over a pool whose row shards
live in Ray actors. Nothing here is imported by the single-machine code paths."""

from activekd.distributed.ray_kcenter import RayCluster, kcenter_on_ray, kcenter_on_ray_files

__all__ = ["RayCluster", "kcenter_on_ray", "kcenter_on_ray_files"]
