package gridpersona.sqlguard;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.spark.SparkConf;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Spark's own parser, with one check before a statement is parsed: in server mode, a client session
 * carries no settings of its own.
 *
 * <p>A JDBC URL's {@code ?key=value} (hiveconf) and {@code #key=value} (hivevar) parts are applied to the
 * Thrift session's SQL conf when it opens, before any statement, so SET being refused does not cover them.
 * A setting such as {@code spark.sql.catalog.x=<a catalog plugin class>} takes effect during analysis
 * (catalogs load while names resolve), before the check rule sees the plan: so the statements of a session
 * whose settings differ from the server's are refused here, before analysis.
 */
final class GuardParser implements ParserInterface {
    // Set by Spark's and Hive's own Thrift client and server code on every session: not the client's choice.
    private static final Set<String> SERVER_SET = Set.of(
        "spark.sql.datetime.java8API.enabled", "spark.sql.binaryOutputStyle",
        "hive.server2.thrift.resultset.default.fetch.size");

    private final SparkSession session;
    private final ParserInterface delegate;
    private final Guard guard;

    GuardParser(SparkSession session, ParserInterface delegate) {
        this.session = session;
        this.delegate = delegate;
        this.guard = new Guard(session);
    }

    private void checkSessionSettings() {
        if (!guard.isServerMode() || guard.enforcedRole() == null) {
            return;
        }
        SparkConf server = session.sparkContext().getConf();
        Map<String, String> settings = CollectionConverters.asJava(session.sessionState().conf().getAllConfs());
        List<String> own = new ArrayList<>();
        for (Map.Entry<String, String> e : settings.entrySet()) {
            String key = e.getKey();
            if (SERVER_SET.contains(key) || key.startsWith("spark.driver.") || key.startsWith("spark.executor.")) {
                // Driver and executor settings are fixed when their JVMs launch: a session value changes nothing.
                continue;
            }
            scala.Option<String> base = server.getOption(key);
            if (base.isEmpty()) {
                // The server's Hive settings reach the session without their spark.hadoop. prefix.
                base = server.getOption("spark.hadoop." + key);
            }
            if (base.isEmpty() || !base.get().equals(e.getValue())) {
                own.add(key);
            }
        }
        if (!own.isEmpty()) {
            own.sort(null);
            throw new RefusedException("refused: this connection set session settings (" + String.join(", ", own)
                + "); the SQL surface takes none: connect without ?key=value or #key=value in the JDBC URL");
        }
    }

    @Override
    public LogicalPlan parsePlan(String sqlText) throws ParseException {
        checkSessionSettings();
        return delegate.parsePlan(sqlText);
    }

    @Override
    public LogicalPlan parsePlanWithParameters(String sqlText, ParameterContext context) throws ParseException {
        checkSessionSettings();
        return delegate.parsePlanWithParameters(sqlText, context);
    }

    @Override
    public LogicalPlan parseQuery(String sqlText) throws ParseException {
        checkSessionSettings();
        return delegate.parseQuery(sqlText);
    }

    @Override
    public Expression parseExpression(String sqlText) throws ParseException {
        return delegate.parseExpression(sqlText);
    }

    @Override
    public TableIdentifier parseTableIdentifier(String sqlText) throws ParseException {
        return delegate.parseTableIdentifier(sqlText);
    }

    @Override
    public FunctionIdentifier parseFunctionIdentifier(String sqlText) throws ParseException {
        return delegate.parseFunctionIdentifier(sqlText);
    }

    @Override
    public scala.collection.immutable.Seq<String> parseMultipartIdentifier(String sqlText) throws ParseException {
        return delegate.parseMultipartIdentifier(sqlText);
    }

    @Override
    public StructType parseRoutineParam(String sqlText) throws ParseException {
        return delegate.parseRoutineParam(sqlText);
    }

    @Override
    public StructType parseTableSchema(String sqlText) throws ParseException {
        return delegate.parseTableSchema(sqlText);
    }

    @Override
    public DataType parseDataType(String sqlText) throws ParseException {
        return delegate.parseDataType(sqlText);
    }
}
