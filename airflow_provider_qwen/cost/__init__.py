"""Money over calls, tries, tasks and runs, without Airflow: the ``qwen_cost`` record, totals,
budgets, the cross-try journal, the run report and metrics. Single values live in ``client.pricing``."""
