"""The scheduled jobs, in one place: what each job does (``jobs.Jobs``, each run by one replica
at a time) and when it runs (``scheduler.build_scheduler``, APScheduler 3)."""
