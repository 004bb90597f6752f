package gridpersona.sqlguard;

import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.CurrentUserContext;
import org.apache.spark.sql.catalyst.analysis.AnalysisContext;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.SubqueryExpression;
import org.apache.spark.sql.catalyst.expressions.UserDefinedExpression;
import org.apache.spark.sql.catalyst.plans.logical.CommandResult;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.View;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * The read-only SQL surface, enforced on Spark's analysed plan (a check rule runs after analysis and
 * before a command executes, so a refused INSERT, SET or ADD JAR has no effect).
 *
 * <p>Allowlist: query operators, a few read-only commands (SHOW, DESCRIBE, USE), and data only through
 * the views Python registered with {@link #allowView}; everything else is refused with one line.
 *
 * <p>Enforced on a thread Python put into an analyst scope ({@link #enterAnalyst}, used by
 * {@code gridpersona sql}), and, in a JVM started with {@code spark.gridpersona.sqlguard.server=true}
 * (a SparkConf fixed at start, which no client can change), on every thread except the ones Python
 * marked trusted for its own registration ({@link #trustThisThread}); the role there is the Thrift
 * session's user's role from the users file.
 */
public final class Guard extends AbstractFunction1<LogicalPlan, BoxedUnit> {
    public static final String SERVER_MODE_CONF = "spark.gridpersona.sqlguard.server";
    public static final String USERS_FILE_CONF = "spark.gridpersona.sql.usersFile";
    public static final String ROLE_ANALYST = "analyst";
    public static final String ROLE_PII = "pii";
    private static final String TAIL = "; the SQL surface is read-only over the lake's tables";

    // Plain ThreadLocals: a thread the query starts (a broadcast, a subquery) must not inherit a scope.
    private static final ThreadLocal<String> ANALYST = new ThreadLocal<>();
    private static final ThreadLocal<Boolean> TRUSTED = new ThreadLocal<>();
    // "layer.table" -> readable by the pii role only.
    private static final Map<String, Boolean> VIEWS = new ConcurrentHashMap<>();

    private static final Set<String> QUERY_NODES = Set.of(
        "Project", "Filter", "Aggregate", "Join", "LateralJoin", "AsOfJoin", "Sort", "GlobalLimit", "LocalLimit",
        "Limit", "Offset", "Tail", "Union", "Intersect", "Except", "Distinct", "Deduplicate", "SubqueryAlias",
        "Window", "WindowGroupLimit", "Expand", "Generate", "LocalRelation", "OneRowRelation", "EmptyRelation",
        "Range", "Sample", "Repartition", "RepartitionByExpression", "RebalancePartitions", "ResolvedHint",
        "WithCTE", "CTERelationDef", "CTERelationRef", "UnionLoop", "UnionLoopRef", "Pivot", "Unpivot",
        // Row conversion the Thrift server adds around a statement to fetch its rows (Dataset API only: no SQL
        // text produces these, so they carry no client code).
        "DeserializeToObject", "SerializeFromObject");
    private static final Set<String> READ_ONLY_COMMANDS = Set.of(
        "ShowTables", "ShowTablesCommand", "ShowTablesExtended", "ShowViews", "ShowViewsCommand",
        "ShowNamespaces", "ShowNamespacesCommand", "ShowColumns", "ShowColumnsCommand", "ShowFunctions",
        "ShowFunctionsCommand", "ShowCatalogsCommand", "ShowCurrentNamespaceCommand", "DescribeRelation",
        "DescribeTableCommand", "DescribeColumn", "DescribeColumnCommand", "DescribeFunction",
        "DescribeFunctionCommand", "DescribeNamespace", "DescribeDatabaseCommand", "SetCatalogAndNamespace",
        "SetNamespaceCommand", "SetCatalogCommand");

    private final boolean serverMode;
    private final String usersFile;

    public Guard(SparkSession session) {
        org.apache.spark.SparkConf conf = session.sparkContext().getConf();
        this.serverMode = conf.getBoolean(SERVER_MODE_CONF, false);
        this.usersFile = conf.get(USERS_FILE_CONF, "");
    }

    // ------------------------------------------------------------ called from Python through py4j

    /** Enforce the guard on this thread with {@code role} until {@link #exitAnalyst}. */
    public static void enterAnalyst(String role) {
        if (!ROLE_ANALYST.equals(role) && !ROLE_PII.equals(role)) {
            throw new IllegalArgumentException("unknown SQL role " + role + " (analyst or pii)");
        }
        ANALYST.set(role);
    }

    public static void exitAnalyst() {
        ANALYST.remove();
    }

    /** In server mode, let this thread (Python's own, registering the lake's views) run anything. */
    public static void trustThisThread() {
        TRUSTED.set(Boolean.TRUE);
    }

    public static void allowView(String name, boolean piiOnly) {
        VIEWS.put(name.toLowerCase(Locale.ROOT), piiOnly);
    }

    public static String activeRoleForTests() {
        return ANALYST.get();
    }

    // ------------------------------------------------------------ the check

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
        // Spark analyses and checks a view's body on its own (ViewResolution.resolve) before the statement;
        // the check of the whole statement then sees the View node and decides by the view's name.
        if (AnalysisContext.get().nestedViewDepth() > 0 || checkingViewBody()) {
            return BoxedUnit.UNIT;
        }
        String role = activeRole();
        if (role != null) {
            checkPlan(plan, role);
        }
        return BoxedUnit.UNIT;
    }

    private static boolean checkingViewBody() {
        return StackWalker.getInstance().walk(frames -> frames.anyMatch(
            f -> f.getClassName().startsWith("org.apache.spark.sql.catalyst.analysis.ViewResolution")));
    }

    boolean isServerMode() {
        return serverMode;
    }

    /** The role the guard enforces on this thread now, or null when it is inert here. */
    String enforcedRole() {
        return activeRole();
    }

    private String activeRole() {
        String scoped = ANALYST.get();
        if (scoped != null) {
            return scoped;
        }
        if (!serverMode || Boolean.TRUE.equals(TRUSTED.get())) {
            return null;
        }
        return Users.roleOf(usersFile, CurrentUserContext.CURRENT_USER().get());
    }

    private static void checkPlan(LogicalPlan plan, String role) {
        if (plan instanceof View) {
            checkView((View) plan, role);
            return;  // the body is the view we registered: it may read the snapshot files
        }
        String name = plan.getClass().getSimpleName();
        if (READ_ONLY_COMMANDS.contains(name)) {
            return;
        }
        if (plan instanceof CommandResult) {
            // The rows of a command that already ran (it passed this check); a DataFrame over it re-analyses.
            LogicalPlan command = ((CommandResult) plan).commandLogicalPlan();
            if (READ_ONLY_COMMANDS.contains(command.getClass().getSimpleName())) {
                return;
            }
            throw new RefusedException(refusal(command, command.getClass().getSimpleName()));
        }
        if (!QUERY_NODES.contains(name)) {
            throw new RefusedException(refusal(plan, name));
        }
        for (Expression e : CollectionConverters.asJava(plan.expressions())) {
            checkExpression(e, role);
        }
        for (LogicalPlan child : CollectionConverters.asJava(plan.children())) {
            checkPlan(child, role);
        }
    }

    private static void checkView(View view, String role) {
        String db = view.desc().identifier().database().isDefined() ? view.desc().identifier().database().get() : "";
        String key = (db + "." + view.desc().identifier().table()).toLowerCase(Locale.ROOT);
        Boolean piiOnly = view.isTempView() ? null : VIEWS.get(key);
        if (piiOnly == null) {
            throw new RefusedException("refused: " + key + " is not one of the lake's tables; query them by "
                + "layer.table name (SHOW TABLES IN gold)" + TAIL);
        }
        if (piiOnly && !ROLE_PII.equals(role)) {
            throw new RefusedException("refused: " + key + " holds customer PII and the " + role + " role may "
                + "not read it (gridpersona sql --allow-pii, or a sql-server user of role pii)");
        }
    }

    private static void checkExpression(Expression e, String role) {
        if (e instanceof CallMethodViaReflection) {
            throw new RefusedException("refused: reflect/java_method call Java methods" + TAIL);
        }
        String name = e.getClass().getSimpleName();
        if (e instanceof UserDefinedExpression || name.contains("UDF") || name.contains("UDAF")
                || name.contains("UDTF") || name.startsWith("Python")) {
            throw new RefusedException("refused: user-defined function " + e.prettyName() + " runs custom code" + TAIL);
        }
        if (e instanceof SubqueryExpression) {
            checkPlan(((SubqueryExpression) e).plan(), role);
        }
        for (Expression child : CollectionConverters.asJava(e.children())) {
            checkExpression(child, role);
        }
    }

    /** One line: what the node would do, in the words of the statement that made it. */
    static String refusal(LogicalPlan plan, String name) {
        String what;
        if (name.startsWith("InsertInto") || name.equals("AppendData") || name.startsWith("Overwrite")
                || name.equals("SaveIntoDataSourceCommand")) {
            what = name.contains("Dir") ? "INSERT OVERWRITE DIRECTORY writes files" : "INSERT writes data";
        } else if (name.contains("Cache")) {
            what = "CACHE/UNCACHE changes the server's state";
        } else if (name.contains("AsSelect")) {
            what = "CREATE TABLE AS SELECT writes data";
        } else if (name.startsWith("Update") || name.startsWith("Delete") || name.startsWith("Merge")
                || name.equals("ReplaceData") || name.equals("WriteDelta") || name.startsWith("Truncate")
                || name.equals("LoadData") || name.equals("LoadDataCommand")) {
            what = name.replaceAll("(Command|Table|FromTable|IntoTable)$", "").toUpperCase(Locale.ROOT)
                + " writes data";
        } else if (name.startsWith("Add") && (name.contains("Jar") || name.contains("File") || name.contains("Archive"))) {
            what = "ADD JAR/FILE/ARCHIVE loads files into the server";
        } else if (name.contains("Function")) {
            what = "CREATE/DROP FUNCTION changes the functions";
        } else if (name.equals("SetCommand") || name.equals("ResetCommand") || name.contains("Variable")) {
            what = "SET/RESET changes the session's settings";
        } else if (name.startsWith("Create") || name.startsWith("Drop") || name.startsWith("Alter")
                || name.startsWith("Rename") || name.startsWith("Replace") || name.contains("Properties")
                || name.contains("Partition") || name.startsWith("Repair") || name.startsWith("Refresh")
                || name.startsWith("Analyze") || name.startsWith("Comment") || name.contains("Location")) {
            what = name.replaceAll("Command$", "") + " changes the catalog";
        } else if (name.equals("ScriptTransformation")) {
            what = "TRANSFORM ... USING runs a program";
        } else if (name.startsWith("Explain")) {
            what = "EXPLAIN is not offered";
        } else if (plan.children().isEmpty() && !name.endsWith("Command")) {
            what = "reading files or tables directly (" + name + ") is not allowed; query the lake's "
                + "layer.table views (SHOW TABLES IN gold)";
        } else {
            what = name.replaceAll("Command$", "") + " is not a query";
        }
        return "refused: " + what + TAIL;
    }
}
