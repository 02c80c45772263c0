"""Where ng_run runs server instances: as local processes (the default) or as actors on a Ray cluster.

A placement starts, watches and stops every replica of every instance; each replica is handed a ServerLaunch
(its own section, the few run-wide settings servers read, and where the other instances listen), never the
whole configuration. Callers route over replicas with ngym.upstream.routing.
"""
