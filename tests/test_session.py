"""The Spark session conf built from the config (no session started), and a conf set for one block."""

from gridpersona.session import with_configured_conf


def test_configured_jvm_options_come_after_the_launch_logging_option_instead_of_replacing_it():
    launch = {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=file:/x.properties",
              "spark.ui.showConsoleProgress": "false"}
    configured = {"spark.driver.extraJavaOptions": "-XX:GCTimeRatio=4", "spark.driver.memory": "4g"}

    conf = with_configured_conf(launch, configured)

    assert conf == {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=file:/x.properties -XX:GCTimeRatio=4",
                    "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "4g"}


def test_other_configured_keys_override_the_launch_conf():
    conf = with_configured_conf({"spark.ui.showConsoleProgress": "false"}, {"spark.ui.showConsoleProgress": "true"})

    assert conf == {"spark.ui.showConsoleProgress": "true"}


def test_jvm_options_given_only_by_the_config_are_kept_as_given():
    conf = with_configured_conf({}, {"spark.driver.extraJavaOptions": "-XX:GCTimeRatio=4"})

    assert conf == {"spark.driver.extraJavaOptions": "-XX:GCTimeRatio=4"}


def test_session_conf_sets_for_the_block_and_restores_or_unsets_after(spark):
    from gridpersona.session import session_conf

    set_key, unset_key = "spark.sql.execution.arrow.maxRecordsPerBatch", "gridpersona.test.unset.key"
    before = spark.conf.get(set_key)
    with session_conf(spark, {set_key: "123", unset_key: "x"}):
        assert spark.conf.get(set_key) == "123" and spark.conf.get(unset_key) == "x"
    assert spark.conf.get(set_key) == before
    assert spark.conf.get(unset_key, None) is None
    try:
        with session_conf(spark, {set_key: "7"}):
            raise RuntimeError("a failing write")
    except RuntimeError:
        pass
    assert spark.conf.get(set_key) == before
