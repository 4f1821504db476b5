"""Research (tuning, model versions, promotions) and Operations (Serve, data, flows) boards."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.builders import stat, table, timeseries

from lab.dashboards._sdk import PG, PROM, promql, sql, sql_variable

__all__ = ["research", "operations", "SERVE_EXPRS"]

# Ray Serve's own metrics (Ray exports them with the ray_ prefix while Serve runs).
SERVE_EXPRS = {
    "Serve requests / s": "sum by (application, deployment) "
                          "(rate(ray_serve_deployment_request_counter_total[$__rate_interval]))",
    "Serve latency p95 (ms)": "histogram_quantile(0.95, sum by (application, deployment, le) "
                              "(rate(ray_serve_deployment_processing_latency_ms_bucket[$__rate_interval])))",
    # error responses (4xx/5xx) per deployment as clients see them; Serve's
    # ray_serve_deployment_error_counter counts only exceptions escaping user code
    "Serve errors / s": "sum by (application, deployment, error_code) "
                        "(rate(ray_serve_num_deployment_http_error_requests_total[$__rate_interval]))",
    "Healthy replicas": "sum by (application, deployment) (ray_serve_deployment_replica_healthy)",
}


def research() -> gdb.Dashboard:
    runs = "strategy IN (${strategy:sqlstring})"
    return (
        gdb.Dashboard("Lab / Research").uid("lab-research").tags(["strategy-lab"]).time("now-90d", "now")
        .timezone("utc").readonly()
        .with_variable(sql_variable("strategy", "SELECT DISTINCT strategy FROM tuning_runs ORDER BY 1", multi=True))
        .with_panel(
            table.Panel().title("Active model versions").datasource(PG).height(7).span(12)
            .with_target(sql("""
                SELECT market AS strategy, domain, version, activated_at, created_at, code_version, model_sha256
                FROM model_versions WHERE is_active AND market IN (${strategy:sqlstring})
                ORDER BY market, domain""")))
        .with_panel(
            stat.Panel().title("Holdout score of the best params, latest tuning run (live)").datasource(PROM).height(7).span(12)
            .with_target(promql('max by (strategy, metric) (lab_tuning_best_score{strategy=~"$strategy"})',
                                legend="{{strategy}} ({{metric}})", instant=True)))
        .with_panel(
            timeseries.Panel().title("Holdout score of each tuning run's best params").datasource(PG).height(8).span(12)
            .with_target(sql(f"""
                SELECT finished_at AS time, strategy || ' (' || metric || ')' AS metric, best_score AS value
                FROM tuning_runs WHERE {runs} AND finished_at IS NOT NULL AND best_score IS NOT NULL
                  AND $__timeFilter(finished_at) ORDER BY 1""", fmt="time_series")))
        .with_panel(
            timeseries.Panel().title("Tuning trials (cumulative, live)").datasource(PROM).height(8).span(12)
            .with_target(promql('sum by (strategy) (lab_tuning_trials_total{strategy=~"$strategy"})',
                                legend="{{strategy}}")))
        .with_panel(
            table.Panel().title("Tuning runs").datasource(PG).height(10).span(24)
            .with_target(sql(f"""
                SELECT started_at AS time, strategy, asset_class, trials, metric, best_score, sharpe,
                       deflated_sharpe, promoted, version_id, reason, finished_at - started_at AS duration
                FROM tuning_runs WHERE {runs} AND $__timeFilter(started_at) ORDER BY started_at DESC""")))
        .with_panel(
            table.Panel().title("Promotion history").datasource(PG).height(10).span(24)
            .with_target(sql("""
                SELECT e.created_at AS time, e.strategy, e.domain, v.version, e.action, e.reason
                FROM model_events e JOIN model_versions v ON v.id = e.version_id
                WHERE e.strategy IN (${strategy:sqlstring}) AND $__timeFilter(e.created_at)
                ORDER BY e.created_at DESC, e.id DESC""")))
    )


def operations() -> gdb.Dashboard:
    board = (gdb.Dashboard("Lab / Operations").uid("lab-operations").tags(["strategy-lab"])
             .time("now-7d", "now").refresh("30s").timezone("utc").readonly())
    units = {"Serve requests / s": "reqps", "Serve latency p95 (ms)": "ms", "Serve errors / s": "reqps",
             "Healthy replicas": "none"}
    for title, expr in SERVE_EXPRS.items():
        board = board.with_panel(timeseries.Panel().title(title).datasource(PROM).unit(units[title])
                                 .height(7).span(6).with_target(promql(expr, legend="{{deployment}}")))
    return (
        board
        .with_panel(
            timeseries.Panel().title("Data freshness: age of the newest bar").datasource(PROM).unit("s")
            .height(8).span(8)
            .with_target(promql("time() - max by (provider, interval) (lab_price_last_bar_timestamp_seconds)",
                                legend="{{provider}} {{interval}}")))
        .with_panel(
            timeseries.Panel().title("Ingestion failures (cumulative fetches that failed)").datasource(PROM)
            .height(8).span(8)
            .with_target(promql('sum by (provider) (lab_ingestion_fetches_total{status="failed"})',
                                legend="{{provider}}")))
        .with_panel(
            stat.Panel().title("Exporter can read the database").datasource(PROM).height(8).span(8)
            .with_target(promql("min(lab_exporter_database_up)", instant=True)))
        .with_panel(
            table.Panel().title("Data freshness per symbol").datasource(PG).height(9).span(12)
            .with_target(sql("""
                SELECT source AS provider, symbol, interval, max(ts) AS last_bar,
                       extract(epoch FROM now() - max(ts)) / 86400 AS age_days
                FROM price_history GROUP BY source, symbol, interval ORDER BY age_days DESC""")))
        .with_panel(
            table.Panel().title("Failed fetches").datasource(PG).height(9).span(12)
            .with_target(sql("""
                SELECT started_at AS time, run_id, provider, symbol, error FROM ingestion_runs
                WHERE status = 'failed' AND $__timeFilter(started_at) ORDER BY started_at DESC""")))
        .with_panel(
            table.Panel().title("Flow failures: trading cycles that did not complete").datasource(PG)
            .description("A cycle row stays 'started' when its flow failed or was killed mid-way; re-running "
                         "the cycle resumes it, and the portfolio's next cycle is refused until then. A real "
                         "broker's cycle that was not re-run near the broker's present is 'abandoned' by the "
                         "next one. Prefect's own flow-run states are in the Prefect UI.")
            .height(8).span(12)
            .with_target(sql("""
                SELECT started_at AS time, portfolio, as_of, status, stage FROM trading_cycles
                WHERE status <> 'completed' AND $__timeFilter(started_at) ORDER BY started_at DESC""")))
        .with_panel(
            timeseries.Panel().title("Ingestion runs with failed symbols").datasource(PG).height(8).span(12)
            .with_target(sql("""
                SELECT min(started_at) AS time, provider AS metric,
                       count(*) FILTER (WHERE status = 'failed') AS value
                FROM ingestion_runs WHERE $__timeFilter(started_at)
                GROUP BY run_id, provider ORDER BY 1""", fmt="time_series")))
    )
