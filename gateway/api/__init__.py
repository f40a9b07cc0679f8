"""The gateway's edge: the gRPC servicers of jobs and live captions, who may call (auth), and the
checks that refuse a bad request when it is made (validation, model capability, profiles)."""
