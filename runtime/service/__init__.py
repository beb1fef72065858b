"""gRPC servicers: protobuf in, data plane calls, protobuf out."""
