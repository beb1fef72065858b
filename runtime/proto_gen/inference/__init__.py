"""KServe v2 gRPC stubs, kept in a private descriptor pool (POOL)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
